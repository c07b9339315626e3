"""Processing one work item: claim it with a lease, run its pipeline unit, write samples exactly once."""

import asyncio
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from generation.models import GenerationRun, RunEvent, Sample, Teacher, TeacherResponse, WorkItem
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
from generation.sdg.teachers import CachedTeacher, CallStats, Completion, TeacherClient, TeacherError
from generation.services.runs import run_fail, run_finish_if_done
from generation.services.samples import samples_write
from generation.services.teachers import TEACHER_FIELDS, teacher_client, teacher_note_ignored_sampling
from labweb.errors import LabError

logger = logging.getLogger(__name__)
ACTIVE_RUN = (GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING)
ANSWERS_PER_WRITE = 16


def _lease_until(now):
    return now + timedelta(seconds=settings.LABWEB_WORK_LEASE_SECONDS)


def item_claim(*, item_id: int, owner: str) -> WorkItem | None:
    """Take the item if it is pending, or running under a lease that expired (its worker died)."""
    now = timezone.now()
    claimed = (
        WorkItem.objects.filter(pk=item_id, run__status__in=ACTIVE_RUN)
        .filter(Q(state=WorkItem.State.PENDING) | Q(state=WorkItem.State.RUNNING, lease_until__lt=now))
        .update(
            state=WorkItem.State.RUNNING,
            lease_owner=owner,
            lease_until=_lease_until(now),
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), now),
        )
    )
    if not claimed:
        return None
    item = WorkItem.objects.select_related("run", "run__teacher").get(pk=item_id)
    if item.run.status == GenerationRun.Status.QUEUED:
        GenerationRun.objects.filter(pk=item.run_id, status=GenerationRun.Status.QUEUED).update(
            status=GenerationRun.Status.RUNNING, started_at=now
        )
    return item


def item_heartbeat(*, item_id: int, owner: str, counts: dict, stats: dict) -> bool:
    """Extend the lease and publish progress. False when the item is no longer ours or the run stopped."""
    return bool(
        WorkItem.objects.filter(
            pk=item_id, lease_owner=owner, state=WorkItem.State.RUNNING, run__status__in=ACTIVE_RUN
        ).update(lease_until=_lease_until(timezone.now()), counts=counts, stats=stats)
    )


def item_process(*, item_id: int, owner: str | None = None) -> str:
    """Run one work item to its end. Safe to call twice, or after a worker died holding it."""
    owner = owner or uuid.uuid4().hex
    item = item_claim(item_id=item_id, owner=owner)
    if item is None:
        return "skipped"
    try:
        client = _frozen_teacher(item.run)
    except TeacherError as error:
        run_fail(run_id=item.run_id, message=error.message)
        WorkItem.objects.filter(pk=item.pk, lease_owner=owner).update(
            state=WorkItem.State.FAILED, error=error.message, finished_at=timezone.now()
        )
        return "failed"
    return _run_unit(item, owner, client)


def _frozen_teacher(run: GenerationRun) -> TeacherClient:
    """The teacher as the run recorded it: editing the teacher mid-run must not change what samples say."""
    frozen = {name: value for name, value in run.teacher_config.items() if name in TEACHER_FIELDS}
    client = teacher_client(Teacher(**frozen, api_key=run.teacher.api_key))
    if hasattr(client, "load"):
        client.load()  # a model that cannot load fails the run at once, not every item in turn
    return client


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

    Answers are saved in batches, but always with (or before) a sample made from them, in one transaction: a
    retry must replay exactly the answers that decided which samples were kept.
    """

    def __init__(self, item: WorkItem, bridge: Bridge):
        self.item, self.bridge = item, bridge
        self.model = item.run.teacher_config["model"]
        # Keys carry the run's own seed, so only a retried item can find its answers in the cache.
        self.replaying = item.attempts > 1
        self.unsaved: list[tuple[str, Completion]] = []

    async def lookup(self, key: str) -> Completion | None:
        return await self.bridge.call(_answer, key) if self.replaying else None

    async def store(self, key: str, completion: Completion) -> None:
        self.unsaved.append((key, completion))
        if len(self.unsaved) >= ANSWERS_PER_WRITE:
            await self.flush()

    async def flush(self, samples: list[GeneratedSample] = ()) -> None:
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


def _run_unit(item: WorkItem, owner: str, client: TeacherClient) -> str:
    # The pipeline runs on the process's teacher loop; its database work comes back to this thread.
    bridge = Bridge()
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
        _item_failed(item, owner, _progress(runner, teacher), error)
        return "failed"
    finally:
        teacher_note_ignored_sampling(
            teacher_id=item.run.teacher_id,
            same_answers=teacher.stats.same_answers,
            temperature=runner.config.sampling.temperature,
        )
    _item_done(item, owner, _progress(runner, teacher), result)
    return "done"


def _kept(item: WorkItem) -> Coalesce:
    """The item's samples, every attempt's, counted inside the UPDATE that records them."""
    count = Sample.objects.filter(item_id=item.pk).order_by().values("item_id").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(count[:1]), 0)


def _item_hand_back(item: WorkItem, owner: str, progress: dict) -> None:
    """The run was cancelled (or another worker took the item over): hand the item back, keep its samples."""
    WorkItem.objects.filter(pk=item.pk, lease_owner=owner, state=WorkItem.State.RUNNING).update(
        state=WorkItem.State.CANCELLED, lease_owner="", lease_until=None, kept=_kept(item), **progress
    )


def _finish(item: WorkItem, owner: str, state: str, progress: dict, *, error: str = "") -> None:
    WorkItem.objects.filter(pk=item.pk, lease_owner=owner, state=WorkItem.State.RUNNING).update(
        state=state,
        kept=_kept(item),
        error=error[:5000],
        finished_at=timezone.now(),
        lease_until=None,
        **progress,
    )


def _item_failed(item: WorkItem, owner: str, progress: dict, error: Exception) -> None:
    if isinstance(error, LabError):
        message = error.message
        # What stopped it, for the run's headline (run_finish_if_done); the counters stay numbers.
        progress = {**progress, "stats": {**progress["stats"], "failure": getattr(error, "kind", "other")}}
    else:
        logger.exception("Work item %s failed", item.pk, exc_info=error)
        message = f"{type(error).__name__}: {error}"
    _finish(item, owner, WorkItem.State.FAILED, progress, error=message)
    RunEvent.objects.create(
        run=item.run,
        item=item,
        leaf_path=item.leaf_path,
        level=RunEvent.Level.ERROR,
        message=f"Work item failed: {message}",
    )
    run_finish_if_done(run_id=item.run_id)


def _item_done(item: WorkItem, owner: str, progress: dict, result: UnitResult) -> None:
    _finish(item, owner, WorkItem.State.DONE, progress)
    if result.kept < item.target:
        RunEvent.objects.create(
            run=item.run,
            item=item,
            leaf_path=item.leaf_path,
            level=RunEvent.Level.WARNING,
            message=f"{item}: kept {result.kept} of {item.target} samples after {result.rounds} rounds.",
        )
    run_finish_if_done(run_id=item.run_id)
