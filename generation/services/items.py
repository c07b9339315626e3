"""Processing one work item: claim it with a lease, run its pipeline unit, write samples exactly once.

Every teacher answer is saved as soon as it comes (several at once while a write is under way), so a worker
that dies costs only the calls it had in flight: whoever takes the item over replays the rest from the cache.
"""

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from generation.models import GenerationRun, RunEvent, TeacherResponse, WorkItem
from generation.sdg.loop import Bridge
from generation.sdg.pipelines import (
    GeneratedSample,
    LeafSpec,
    PipelineConfig,
    Unit,
    UnitResult,
    UnitRunner,
    unit_runner,
)
from generation.sdg.teachers import CachedTeacher, CallStats, Completion, TeacherClient, TeacherError, call_share
from generation.services.counters import items_change
from generation.services.runs import run_fail, run_finish_if_done, run_pause, run_teacher
from generation.services.samples import samples_kept, samples_write
from generation.services.teachers import teacher_note_ignored_sampling
from labweb import jobs
from labweb.db import release_pooled_connection
from labweb.errors import LabError

logger = logging.getLogger(__name__)
ACTIVE_RUN = (GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING)


def _lease_until(now):
    return now + timedelta(seconds=settings.LABWEB_WORK_LEASE_SECONDS)


def item_claim(*, item_id: int, owner: str) -> WorkItem | None:
    """Take the item if it is pending, or running under a lease that expired (its worker died)."""
    now = timezone.now()
    claimed = items_change(
        WorkItem.objects.filter(pk=item_id, run__status__in=ACTIVE_RUN).filter(
            Q(state=WorkItem.State.PENDING) | Q(state=WorkItem.State.RUNNING, lease_until__lt=now)
        ),
        state=WorkItem.State.RUNNING,
        lease_owner=owner,
        lease_until=_lease_until(now),
        attempts=F("attempts") + 1,
        started_at=Coalesce(F("started_at"), now),
    )
    if not claimed:
        return None
    item = WorkItem.objects.select_related("run", "run__teacher").get(pk=item_id)
    if item.run.status == GenerationRun.Status.QUEUED:
        jobs.transition(item.run, to=GenerationRun.Status.RUNNING, allowed=[GenerationRun.Status.QUEUED])
    return item


def item_heartbeat(*, item_id: int, owner: str, counts: dict, stats: dict) -> bool:
    """Extend the lease and publish progress (its counters, the samples it kept so far). False when the item is no
    longer ours or the run stopped."""
    return bool(
        WorkItem.objects.filter(
            pk=item_id, lease_owner=owner, state=WorkItem.State.RUNNING, run__status__in=ACTIVE_RUN
        ).update(lease_until=_lease_until(timezone.now()), counts=counts, stats=stats, kept=samples_kept())
    )


def item_process(*, item_id: int, owner: str | None = None) -> str:
    """Run one work item to its end. Safe to call twice, or after a worker died holding it.

    The lease is the worker's: its process renews it while the item runs (labweb.jobs.lease_kept), so a slow
    item keeps it and a dead worker's items come back as soon as it runs out.
    """
    owner = owner or jobs.lease_owner()
    item = item_claim(item_id=item_id, owner=owner)
    if item is None:
        return "skipped"
    with jobs.lease_kept(WorkItem, item.pk, owner):
        try:
            client = run_teacher(item.run)
            if hasattr(client, "load"):
                client.load()  # a model that cannot load fails the run at once, not every item in turn
        except TeacherError as error:
            if not error.retryable:
                run_fail(run_id=item.run_id, message=error.message)
                _finish(item, owner, WorkItem.State.FAILED, {}, error=error.message)
                return "failed"
            return _item_error(item, owner, {}, error)
        return _run_unit(item, owner, client)


def _unit(item: WorkItem) -> Unit:
    return Unit(
        leaf=LeafSpec(**item.spec["leaf"]),
        target=item.target,
        seed_index=item.seed_index,
        chunk_index=item.chunk_index,
        chunk=item.spec.get("chunk"),
    )


class _LeaseLost(Exception):
    pass


class _ItemStore:
    """The item's side of the response cache and its sample writes, done on the item's own thread.

    Each answer is written as soon as it comes; answers that come while a write is under way go together in the
    next one. A sample is written after (or with) every answer it was made from: a retry must replay exactly
    the answers that decided which samples were kept.
    """

    def __init__(self, item: WorkItem, bridge: Bridge):
        self.item, self.bridge = item, bridge
        self.model = item.run.teacher_config["model"]
        # Keys carry the run's own seed, so only a retried item can find its answers in the cache.
        self.replaying = item.attempts > 1
        self.unsaved: list[tuple[str, Completion]] = []
        self.writing: asyncio.Future | None = None

    async def lookup(self, key: str) -> Completion | None:
        return await self.bridge.call(_answer, key) if self.replaying else None

    async def store(self, key: str, completion: Completion) -> None:
        self.unsaved.append((key, completion))
        if self.writing is None or self.writing.done():
            self.writing = asyncio.ensure_future(self._write_unsaved())

    async def _write_unsaved(self) -> None:
        while self.unsaved:
            answers, self.unsaved = self.unsaved, []
            await self.bridge.call(_write, self.model, answers, self.item, [])

    async def flush(self, samples: list[GeneratedSample] = ()) -> None:
        if self.writing is not None:
            await self.writing  # a failed write fails the item here
        if self.unsaved or samples:
            answers, self.unsaved = self.unsaved, []
            await self.bridge.call(_write, self.model, answers, self.item, list(samples))


def _answer(key: str) -> Completion | None:
    row = TeacherResponse.objects.filter(key=key).first()
    if row is None:
        return None
    return Completion(
        text=row.text,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        finish_reason=row.finish_reason or None,
        steered=row.steered,
    )


def _write(model: str, answers: list[tuple[str, Completion]], item: WorkItem, samples: list[GeneratedSample]) -> None:
    with transaction.atomic():
        if answers:
            TeacherResponse.objects.bulk_create(
                [
                    TeacherResponse(
                        key=key,
                        model=model,
                        text=completion.text,
                        prompt_tokens=completion.prompt_tokens,
                        completion_tokens=completion.completion_tokens,
                        finish_reason=completion.finish_reason or "",
                        steered=completion.steered,
                    )
                    for key, completion in answers
                ],
                ignore_conflicts=True,
            )
        if samples:
            samples_write(item=item, samples=samples)


def _progress(runner: UnitRunner, teacher: CachedTeacher) -> dict:
    return {"counts": dict(runner.result.counts), "stats": teacher.stats.as_dict()}


async def _drive(runner: UnitRunner, teacher: CachedTeacher, store: _ItemStore, *, owner: str) -> UnitResult:
    """Run the unit, flushing its writes and renewing the lease every few seconds; stop when the lease is lost."""
    item = store.item
    call_share.set(f"run:{item.run_id}")  # the teacher's slots are shared fairly between runs
    work = asyncio.ensure_future(runner.run())
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=min(5.0, settings.LABWEB_WORK_LEASE_SECONDS / 3))
            await store.flush()
            if done:  # the item's last update publishes its counts
                return work.result()
            alive = await store.bridge.call(item_heartbeat, item_id=item.pk, owner=owner, **_progress(runner, teacher))
            if not alive:
                work.cancel()
                raise _LeaseLost()
    finally:
        if not work.done():
            work.cancel()
        # What came before the item stopped, however it stopped, is kept for whoever runs it next (unless its
        # worker thread is stopping: then nobody is left to do the write).
        if not asyncio.current_task().cancelling():
            with contextlib.suppress(Exception):
                await store.flush()


def _run_unit(item: WorkItem, owner: str, client: TeacherClient) -> str:
    # The pipeline runs on the process's teacher loop; its database work comes back to this thread, which holds
    # a pooled connection only while it does that work.
    bridge = Bridge(idle=release_pooled_connection)
    store = _ItemStore(item, bridge)
    # The counters go on from the item's earlier attempts: a run's totals are every call it made.
    teacher = CachedTeacher(
        teacher=client, lookup=store.lookup, store=store.store, stats=CallStats.from_dict(item.stats)
    )
    runner = unit_runner(_unit(item), teacher, PipelineConfig.from_dict(item.run.config), store.flush)
    try:
        result = bridge.run(_drive(runner, teacher, store, owner=owner))
    except _LeaseLost:
        _item_hand_back(item, owner, _progress(runner, teacher))
        return "stopped"
    except Exception as error:  # noqa: BLE001 - whatever stops an item is recorded on it, never left running
        return _item_error(item, owner, _progress(runner, teacher), error)
    finally:
        teacher_note_ignored_sampling(
            teacher_id=item.run.teacher_id,
            same_answers=teacher.stats.same_answers,
            temperature=runner.config.sampling.temperature,
        )
    _item_done(item, owner, _progress(runner, teacher), result)
    return "done"


def _item_hand_back(item: WorkItem, owner: str, progress: dict) -> None:
    """The run was cancelled or paused (or another worker took the item over): hand the item back, keep its
    samples. A paused run's item waits, pending, for the resume; a cancelled run's is cancelled."""
    paused = GenerationRun.objects.filter(pk=item.run_id, status=GenerationRun.Status.PAUSED).exists()
    state = WorkItem.State.PENDING if paused else WorkItem.State.CANCELLED
    items_change(
        _held(item, owner),
        state=state,
        queued_at=None,
        lease_owner="",
        lease_until=None,
        kept=samples_kept(),
        **progress,
    )


def _held(item: WorkItem, owner: str):
    return WorkItem.objects.filter(pk=item.pk, lease_owner=owner, state=WorkItem.State.RUNNING)


def _finish(item: WorkItem, owner: str, state: str, progress: dict, *, error: str = "") -> None:
    items_change(
        _held(item, owner),
        state=state,
        kept=samples_kept(),
        error=error[:5000],
        finished_at=timezone.now(),
        lease_until=None,
        **progress,
    )


def _item_error(item: WorkItem, owner: str, progress: dict, error: Exception) -> str:
    """What stops an item decides what comes next: a teacher out of reach pauses the run (the item waits for the
    resume), a failure that may pass is tried again after a delay, and anything else fails the item."""
    if isinstance(error, TeacherError) and error.unreachable:
        run_pause(run_id=item.run_id, message=error.message)
        _item_hand_back(item, owner, progress)  # pending for the resume (cancelled if the run was, meanwhile)
        return "paused"
    if isinstance(error, LabError):
        message = error.message
        # What stopped it, for the run's headline (run_finish_if_done); the counters stay numbers.
        progress = {**progress, "stats": {**progress["stats"], "failure": getattr(error, "kind", "other")}}
    else:
        logger.exception("Work item %s failed", item.pk, exc_info=error)
        message = f"{type(error).__name__}: {error}"
    passing = (isinstance(error, TeacherError) and error.retryable) or isinstance(error, DatabaseError)
    failures = item.failures + 1
    if passing and failures <= settings.LABWEB_ITEM_RETRIES:
        delay = settings.LABWEB_ITEM_RETRY_DELAY * 2 ** (failures - 1) * (0.75 + random.random() / 2)
        now = timezone.now()
        retried = items_change(
            _held(item, owner),
            state=WorkItem.State.PENDING,
            failures=failures,
            retry_at=now + timedelta(seconds=delay),
            # Left unsent: the reaper sends it once the delay is over, should the delayed message below be lost
            # (a worker holds it until its time, and one that dies takes it along).
            queued_at=None,
            lease_owner="",
            lease_until=None,
            kept=samples_kept(),
            error=message[:5000],
            **progress,
        )
        if retried:
            tries = settings.LABWEB_ITEM_RETRIES + 1
            _log(
                item,
                f"Work item failed (try {failures} of {tries}): {message} Trying again in {delay:.0f} s.",
                level=RunEvent.Level.WARNING,
            )
            jobs.send_task_on_commit("generation.tasks.process_item", item.pk, countdown=delay)
            return "retrying"
        return "stopped"
    _held(item, owner).update(failures=failures)
    _finish(item, owner, WorkItem.State.FAILED, progress, error=message)
    given_up = f" after {failures} tries" if passing else ""
    _log(item, f"Work item failed{given_up}: {message}", level=RunEvent.Level.ERROR)
    run_finish_if_done(run_id=item.run_id)
    return "failed"


def _log(item: WorkItem, message: str, *, level: str) -> None:
    RunEvent.objects.create(run=item.run, item=item, leaf_path=item.leaf_path, level=level, message=message)


def _item_done(item: WorkItem, owner: str, progress: dict, result: UnitResult) -> None:
    _finish(item, owner, WorkItem.State.DONE, progress)
    if result.kept < item.target:
        _log(
            item,
            f"{item}: kept {result.kept} of {item.target} samples after {result.rounds} rounds.",
            level=RunEvent.Level.WARNING,
        )
    run_finish_if_done(run_id=item.run_id)
