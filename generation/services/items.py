"""Processing one work item: claim it with a lease, run its pipeline unit, write samples exactly once."""

import asyncio
import logging
import uuid
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, F, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from generation.models import GenerationRun, RunEvent, Sample, Teacher, TeacherResponse, WorkItem
from generation.sdg.loop import Bridge
from generation.sdg.pipelines import LeafSpec, PipelineConfig, Unit, UnitRunner
from generation.sdg.pipelines import Sample as SdgSample
from generation.sdg.teacher import CachedTeacher, Completion, TeacherError
from generation.services.runs import lease_seconds, run_fail, run_finish_if_done
from generation.services.teachers import TEACHER_FIELDS, teacher_client
from generation.signals import samples_written
from labweb.errors import LabError

logger = logging.getLogger(__name__)
ACTIVE_RUN = (GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING)


def item_claim(*, item_id: int, owner: str) -> WorkItem | None:
    """Take the item if it is pending, or running under a lease that expired (its worker died)."""
    now = timezone.now()
    claimed = (
        WorkItem.objects.filter(pk=item_id, run__status__in=ACTIVE_RUN)
        .filter(Q(state=WorkItem.State.PENDING) | Q(state=WorkItem.State.RUNNING, lease_until__lt=now))
        .update(
            state=WorkItem.State.RUNNING,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds()),
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
    now = timezone.now()
    return bool(
        WorkItem.objects.filter(
            pk=item_id, lease_owner=owner, state=WorkItem.State.RUNNING, run__status__in=ACTIVE_RUN
        ).update(lease_until=now + timedelta(seconds=lease_seconds()), counts=counts, stats=stats)
    )


def samples_write(*, item: WorkItem, samples: list[SdgSample]) -> int:
    """Insert samples by idempotency key; a sample already written (by an earlier attempt) is left alone."""
    rows = [
        Sample(
            idempotency_key=f"{item.run_id}:{item.pk}:{sample.key}",
            run_id=item.run_id,
            item=item,
            leaf_id=item.leaf_id,
            leaf_path=item.leaf_path,
            kind=item.kind,
            question=sample.question,
            response=sample.response,
            context=sample.context,
            seed_indices=sample.seed_indices,
            chunk_index=sample.chunk_index,
            scores=sample.scores,
            rationales=sample.rationales,
            raw=sample.raw,
            prompts=sample.prompts,
            teacher_id=item.run.teacher_id,
            teacher_model=item.run.teacher_config["model"],
        )
        for sample in samples
    ]
    with transaction.atomic():
        created = Sample.objects.bulk_create(rows, ignore_conflicts=True)
        samples_written.send(sender=Sample, item=item)
    return len(created)


def _lookup(key: str) -> Completion | None:
    row = TeacherResponse.objects.filter(key=key).first()
    if row is None:
        return None
    return Completion(
        text=row.text,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        finish_reason=row.finish_reason or None,
    )


def _store(model: str, answers: list[tuple[str, Completion]]) -> None:
    TeacherResponse.objects.bulk_create(
        [
            TeacherResponse(
                key=key,
                model=model,
                text=completion.text,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                finish_reason=completion.finish_reason or "",
            )
            for key, completion in answers
        ],
        ignore_conflicts=True,
    )


def _write(model: str, answers: list[tuple[str, Completion]], item: WorkItem, samples: list[SdgSample]) -> None:
    with transaction.atomic():
        if answers:
            _store(model, answers)
        if samples:
            samples_write(item=item, samples=samples)


class _LeaseLost(Exception):
    pass


def item_process(*, item_id: int, owner: str | None = None) -> str:
    """Run one work item to its end. Safe to call twice, or after a worker died holding it."""
    owner = owner or uuid.uuid4().hex
    item = item_claim(item_id=item_id, owner=owner)
    if item is None:
        return "skipped"
    run = item.run
    try:
        # The teacher as the run recorded it: editing the teacher mid-run must not change what samples say.
        frozen = {name: value for name, value in run.teacher_config.items() if name in TEACHER_FIELDS}
        client = teacher_client(Teacher(**frozen, api_key=run.teacher.api_key))
        if hasattr(client, "load"):
            client.load()
    except TeacherError as error:
        run_fail(run_id=run.pk, message=error.message)
        WorkItem.objects.filter(pk=item.pk, lease_owner=owner).update(
            state=WorkItem.State.FAILED, error=error.message, finished_at=timezone.now()
        )
        return "failed"
    return _run_item(item, owner, client)


def _run_item(item: WorkItem, owner: str, client) -> str:
    run = item.run
    model = run.teacher_config["model"]
    # The pipeline runs on the process's teacher loop; its database work comes back to this thread.
    bridge = Bridge()
    in_db = bridge.call

    # Keys carry the run's own seed, so only a retried item can find its answers in the cache.
    replaying = item.attempts > 1

    async def lookup(key):
        return await in_db(_lookup, key) if replaying else None

    unsaved: list[tuple[str, Completion]] = []

    async def store(key, completion):
        unsaved.append((key, completion))
        if len(unsaved) >= 16:
            await flush()

    async def flush(samples=()):
        # Answers are saved in batches, but always with (or before) a sample made from them, in one
        # transaction: a retry must replay exactly the answers that decided which samples were kept.
        if unsaved or samples:
            batch = unsaved[:]
            unsaved.clear()
            await in_db(_write, model, batch, item, list(samples))

    teacher = CachedTeacher(teacher=client, lookup=lookup, store=store)
    spec = item.spec
    unit = Unit(
        leaf=LeafSpec(**spec["leaf"]),
        target=item.target,
        seed_index=item.seed_index,
        chunk_index=item.chunk_index,
        chunk=spec.get("chunk"),
    )

    runner = UnitRunner(unit, teacher, PipelineConfig.from_dict(run.config), flush)

    async def drive():
        work = asyncio.ensure_future(runner.run())
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=min(5.0, lease_seconds() / 3))
                await flush()
                if done:  # the item's last update publishes its counts
                    return work.result()
                alive = await in_db(
                    item_heartbeat,
                    item_id=item.pk,
                    owner=owner,
                    counts=dict(runner.result.counts),
                    stats=teacher.stats.as_dict(),
                )
                if not alive:
                    work.cancel()
                    raise _LeaseLost()
        finally:
            if not work.done():
                work.cancel()

    try:
        result = bridge.run(drive())
    except _LeaseLost:
        # The run was cancelled (or another worker took the item over): hand the item back, keep its samples.
        WorkItem.objects.filter(pk=item.pk, lease_owner=owner, state=WorkItem.State.RUNNING).update(
            state=WorkItem.State.CANCELLED,
            lease_owner="",
            lease_until=None,
            counts=dict(runner.result.counts),
            stats=teacher.stats.as_dict(),
            kept=_kept(item),
        )
        return "stopped"
    except Exception as error:  # noqa: BLE001 - whatever stops an item is recorded on it, never left running
        if isinstance(error, LabError):
            message = error.message
        else:
            logger.exception("Work item %s failed", item.pk)
            message = f"{type(error).__name__}: {error}"
        _finish(item, owner, WorkItem.State.FAILED, runner, teacher, error=message)
        RunEvent.objects.create(
            run=run,
            item=item,
            leaf_path=item.leaf_path,
            level=RunEvent.Level.ERROR,
            message=f"Work item failed: {message}",
        )
        run_finish_if_done(run_id=run.pk)
        return "failed"
    _finish(item, owner, WorkItem.State.DONE, runner, teacher)
    if result.kept < item.target:
        RunEvent.objects.create(
            run=run,
            item=item,
            leaf_path=item.leaf_path,
            level=RunEvent.Level.WARNING,
            message=f"{item}: kept {result.kept} of {item.target} samples after {result.rounds} rounds.",
        )
    run_finish_if_done(run_id=run.pk)
    return "done"


def _kept(item: WorkItem) -> Coalesce:
    """The item's samples, every attempt's, counted inside the UPDATE that records them."""
    count = Sample.objects.filter(item_id=item.pk).order_by().values("item_id").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(count[:1]), 0)


def _finish(item, owner, state, runner, teacher, *, error="") -> None:
    WorkItem.objects.filter(pk=item.pk, lease_owner=owner, state=WorkItem.State.RUNNING).update(
        state=state,
        kept=_kept(item),
        counts=dict(runner.result.counts),
        stats=teacher.stats.as_dict(),
        error=error[:5000],
        finished_at=timezone.now(),
        lease_until=None,
    )
