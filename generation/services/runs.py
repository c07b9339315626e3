"""Generation runs: planning the work items, dispatching them, cancel, resume and completion."""

import logging
import secrets
from dataclasses import asdict
from itertools import groupby
from operator import attrgetter

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from curation.models import Kind, Leaf, TaxonomySnapshot
from curation.selectors import leaf_qna, taxonomy_diff
from generation.models import GenerationRun, RunEvent, Sample, Teacher, WorkItem
from generation.sdg.chunking import chunk_document
from generation.sdg.dedup import NearDuplicates
from generation.sdg.pipelines import KNOWLEDGE, SKILLS, LeafSpec, PipelineConfig, split_target
from generation.sdg.prompts import prompt_versions
from labweb.errors import ConflictError, LabError

logger = logging.getLogger(__name__)
TERMINAL = (WorkItem.State.DONE, WorkItem.State.FAILED, WorkItem.State.CANCELLED)


def _event(
    run: GenerationRun,
    message: str,
    *,
    level: str = RunEvent.Level.INFO,
    item: WorkItem | None = None,
    leaf_path: str = "",
) -> None:
    RunEvent.objects.create(
        run=run, item=item, leaf_path=leaf_path or (item.leaf_path if item else ""), level=level, message=message
    )


def _leaf_spec(leaf: Leaf) -> LeafSpec:
    qna = leaf_qna(leaf, leaf.seeds.all())
    return LeafSpec(
        path=leaf.path,
        kind=KNOWLEDGE if leaf.kind == Kind.KNOWLEDGE else SKILLS,
        seeds=qna.get("seed_examples") or [],
        task_description=leaf.task_description or "",
        domain=leaf.domain or "",
        document_outline=leaf.document_outline or "",
    )


def _select_leaves(scope: str, baseline: TaxonomySnapshot | None, leaf_ids: list[int] | None):
    leaves = Leaf.objects.prefetch_related("seeds", "documents").order_by("path")
    if scope == GenerationRun.Scope.CHANGED:
        return leaves.filter(path__in=taxonomy_diff(baseline=baseline).changed)
    if scope == GenerationRun.Scope.SELECTED:
        if not leaf_ids:
            raise LabError("Choose at least one leaf.", field="leaves")
        return leaves.filter(pk__in=leaf_ids)
    return leaves


@transaction.atomic
def run_create(
    *,
    teacher: Teacher,
    user,
    scope: str = GenerationRun.Scope.ALL,
    baseline: TaxonomySnapshot | None = None,
    leaf_ids: list[int] | None = None,
    samples_per_leaf: int = 30,
    config: dict | None = None,
    name: str = "",
    min_seeds: int = 1,
) -> GenerationRun:
    """Plan a run: one work item per seed example (skills) or document chunk (knowledge), then queue it.

    Leaves that cannot be generated from (invalid, too few seeds, knowledge without documents) are reported
    on the run and skipped; the rest of the run goes ahead.
    """
    if scope not in GenerationRun.Scope.values:
        raise LabError(f"Unknown scope {scope!r}.", field="scope")
    if not 1 <= samples_per_leaf <= 100_000:
        raise LabError("Samples per leaf must be between 1 and 100,000.", field="samples_per_leaf")
    config = dict(config or {})
    config["sampling"] = {
        "temperature": teacher.temperature,
        "top_p": teacher.top_p,
        "max_tokens": teacher.max_tokens,
        # A fresh seed per run: a second run over the same leaves must not replay the first from the cache.
        # It is stored with the run, so a resumed run replays its own answers exactly.
        "seed": secrets.randbelow(2**31),
    } | dict(config.get("sampling") or {})
    try:
        pipeline = PipelineConfig.from_dict(config)
    except TypeError as exc:
        raise LabError(f"Bad pipeline configuration: {exc}.", field="config") from None
    run = GenerationRun.objects.create(
        name=name,
        teacher=teacher,
        teacher_config=teacher.public_config(),
        scope=scope,
        baseline=baseline,
        samples_per_leaf=samples_per_leaf,
        config=asdict(pipeline),
        prompt_versions=prompt_versions(),
        created_by=user,
    )
    items: list[WorkItem] = []
    planned = 0
    chunk_tokens = max(256, teacher.context_tokens // 2 - 300)
    for leaf in _select_leaves(scope, baseline, leaf_ids):
        if not leaf.is_valid:
            first = leaf.problems[0]["message"] if leaf.problems else "it does not validate"
            _event(run, f"Skipped: the leaf is invalid ({first}).", level=RunEvent.Level.ERROR, leaf_path=leaf.path)
            continue
        spec = _leaf_spec(leaf)
        if len(spec.seeds) < min_seeds:
            _event(
                run,
                f"Skipped: the leaf has {len(spec.seeds)} seed examples; generation needs {min_seeds}.",
                level=RunEvent.Level.ERROR,
                leaf_path=leaf.path,
            )
            continue
        planned += 1
        if spec.kind == KNOWLEDGE:
            chunks = [
                chunk
                for document in leaf.documents.all()
                for chunk in chunk_document(document.content, max_tokens=chunk_tokens)
            ]
            if not chunks:
                _event(
                    run,
                    "Skipped: a knowledge leaf needs a source document to generate from; attach one.",
                    level=RunEvent.Level.ERROR,
                    leaf_path=leaf.path,
                )
                planned -= 1
                continue
            units = [{"chunk_index": index, "chunk": chunk} for index, chunk in enumerate(chunks)]
        else:
            units = [{"seed_index": index} for index in range(len(spec.seeds))]
        for unit, target in zip(units, split_target(samples_per_leaf, len(units)), strict=True):
            if target == 0:
                continue
            items.append(
                WorkItem(
                    run=run,
                    leaf=leaf,
                    leaf_path=leaf.path,
                    leaf_hash=leaf.content_hash,
                    kind=spec.kind,
                    seed_index=unit.get("seed_index"),
                    chunk_index=unit.get("chunk_index"),
                    unit=f"seed {unit['seed_index']}" if "seed_index" in unit else f"chunk {unit['chunk_index']}",
                    spec={"leaf": asdict(spec), "chunk": unit.get("chunk")},
                    target=target,
                )
            )
    WorkItem.objects.bulk_create(items, batch_size=1000)
    if not items:
        run.status = GenerationRun.Status.FAILED
        run.error = "Nothing to generate: no leaf in scope can be generated from (see the run's log)."
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])
        return run
    _event(run, f"Planned {len(items)} work items over {planned} leaves, {samples_per_leaf} samples per leaf.")
    transaction.on_commit(lambda: run_dispatch(run_id=run.pk))
    return run


def run_dispatch(*, run_id: int) -> int:
    """Queue a task for every pending item of an active run. Queuing twice is harmless: items are claimed."""
    from generation.tasks import process_item

    ids = list(
        WorkItem.objects.filter(
            run_id=run_id,
            state=WorkItem.State.PENDING,
            run__status__in=[GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING],
        ).values_list("pk", flat=True)
    )
    for item_id in ids:
        process_item.delay(item_id)
    return len(ids)


@transaction.atomic
def run_cancel(*, run: GenerationRun, user) -> GenerationRun:
    updated = GenerationRun.objects.filter(
        pk=run.pk, status__in=[GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING]
    ).update(status=GenerationRun.Status.CANCELLED, finished_at=timezone.now())
    if not updated:
        run.refresh_from_db()
        raise ConflictError(f"The run is {run.status}; only a queued or running run can be cancelled.", field="status")
    # Running items see the cancellation at their next heartbeat and stop there, keeping what they wrote.
    WorkItem.objects.filter(run=run, state=WorkItem.State.PENDING).update(state=WorkItem.State.CANCELLED)
    _event(run, f"Cancelled by {user}.", level=RunEvent.Level.WARNING)
    run.refresh_from_db()
    return run


@transaction.atomic
def run_resume(*, run: GenerationRun, user) -> GenerationRun:
    """Start again what is not done: cancelled, failed and abandoned items. Done items and samples stay."""
    run = GenerationRun.objects.select_for_update().get(pk=run.pk)
    if not run.items.exclude(state=WorkItem.State.DONE).exists():
        raise ConflictError(
            "Every work item of this run is done (or it has none); there is nothing to resume.", field="status"
        )
    stopped = Q(state__in=[WorkItem.State.CANCELLED, WorkItem.State.FAILED]) | Q(
        state=WorkItem.State.RUNNING, lease_until__lt=timezone.now()
    )
    if run.is_active and not run.items.filter(stopped).exists():
        raise ConflictError("The run is still going; resume it once it stops.", field="status")
    now = timezone.now()
    reset = (
        WorkItem.objects.filter(run=run)
        .filter(
            Q(state__in=[WorkItem.State.CANCELLED, WorkItem.State.FAILED])
            | Q(state=WorkItem.State.RUNNING, lease_until__lt=now)
            # Items a cancel stopped; a worker still finishing one loses its lease at its next heartbeat.
            | Q(state=WorkItem.State.RUNNING, run__status=GenerationRun.Status.CANCELLED)
        )
        .update(state=WorkItem.State.PENDING, lease_owner="", lease_until=None, error="")
    )
    run.status = GenerationRun.Status.RUNNING if run.started_at else GenerationRun.Status.QUEUED
    run.finished_at = None
    run.error = ""
    run.save(update_fields=["status", "finished_at", "error"])
    _event(run, f"Resumed by {user}: {reset} work items queued again.")
    transaction.on_commit(lambda: run_dispatch(run_id=run.pk))
    return run


def run_finish_if_done(*, run_id: int) -> bool:
    """Close the run once no item is pending or running. Exactly one caller wins the conditional update."""
    # Every finished item asks; a cheap existence check keeps that from counting the whole run each time.
    if WorkItem.objects.filter(run_id=run_id, state__in=[WorkItem.State.PENDING, WorkItem.State.RUNNING]).exists():
        return False
    counts = WorkItem.objects.filter(run_id=run_id).aggregate(
        open=Count("pk", filter=Q(state__in=[WorkItem.State.PENDING, WorkItem.State.RUNNING])),
        done=Count("pk", filter=Q(state=WorkItem.State.DONE)),
        failed=Count("pk", filter=Q(state=WorkItem.State.FAILED)),
    )
    if counts["open"]:
        return False
    kept = Sample.objects.filter(run_id=run_id).count()
    status = GenerationRun.Status.SUCCEEDED if counts["done"] and kept else GenerationRun.Status.FAILED
    error = f"{counts['failed']} work items failed; see the log." if counts["failed"] else ""
    if counts["done"] and not kept:
        error = (
            "No sample passed the judges: see the stage counters for where candidates were dropped (a small "
            "teacher often ignores the output format)."
        )
    finished = GenerationRun.objects.filter(
        pk=run_id, status__in=[GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING]
    ).update(status=status, error=error, finished_at=timezone.now())
    if finished:
        run = GenerationRun.objects.get(pk=run_id)
        if status == GenerationRun.Status.SUCCEEDED:
            marked = samples_mark_duplicates(run_id=run_id, threshold=run.config.get("dedup_threshold", 0.7))
            if marked:
                _event(
                    run,
                    f"{marked} samples nearly repeat a sample of another work item of their leaf; they are "
                    "marked as duplicates.",
                    level=RunEvent.Level.WARNING,
                )
        _event(
            run,
            f"Run {status}: {counts['done']} work items done, {counts['failed']} failed, {kept} samples kept.",
            level=RunEvent.Level.INFO if status == GenerationRun.Status.SUCCEEDED else RunEvent.Level.ERROR,
        )
    return bool(finished)


def samples_mark_duplicates(*, run_id: int, threshold: float) -> int:
    """Flag samples whose question nearly repeats one of another work item of the same leaf.

    Each unit already drops near-duplicates of the seeds and of its own candidates; units run in parallel, so
    this pass across them runs once, when the run completes, in key order: the result does not depend on which
    worker finished first.
    """
    samples = (
        Sample.objects.filter(run_id=run_id, duplicate_of__isnull=True)
        .order_by("leaf_path", "idempotency_key")
        .only("pk", "leaf_path", "question")
    )
    marked = []
    for _, group in groupby(samples.iterator(chunk_size=2000), key=attrgetter("leaf_path")):
        seen, firsts = NearDuplicates(threshold=threshold), []
        for sample in group:
            index = seen.match(sample.question)
            if index is None:
                firsts.append(sample)
            else:
                sample.duplicate_of_id = firsts[index].pk
                marked.append(sample)
    Sample.objects.bulk_update(marked, ["duplicate_of"], batch_size=1000)
    return len(marked)


def run_fail(*, run_id: int, message: str) -> None:
    """Stop a run that cannot go on at all (its teacher cannot be loaded)."""
    with transaction.atomic():
        updated = GenerationRun.objects.filter(
            pk=run_id, status__in=[GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING]
        ).update(status=GenerationRun.Status.FAILED, error=message, finished_at=timezone.now())
        WorkItem.objects.filter(run_id=run_id, state=WorkItem.State.PENDING).update(state=WorkItem.State.CANCELLED)
        if updated:
            _event(GenerationRun.objects.get(pk=run_id), message, level=RunEvent.Level.ERROR)


def requeue_expired() -> int:
    """Put items whose worker died (lease expired) back in the queue. The periodic reaper calls this.

    An item abandoned `LABWEB_WORK_MAX_ATTEMPTS` times is failed instead: something in it kills workers.
    """
    now = timezone.now()
    expired = WorkItem.objects.filter(
        state=WorkItem.State.RUNNING,
        lease_until__lt=now,
        run__status__in=[GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING],
    )
    doomed = list(expired.filter(attempts__gte=settings.LABWEB_WORK_MAX_ATTEMPTS).select_related("run"))
    for item in doomed:
        if WorkItem.objects.filter(pk=item.pk, state=WorkItem.State.RUNNING, lease_until__lt=now).update(
            state=WorkItem.State.FAILED,
            lease_owner="",
            lease_until=None,
            finished_at=now,
            error=f"Abandoned {item.attempts} times: the worker died each time it ran this item.",
        ):
            _event(
                item.run, f"{item}: abandoned {item.attempts} times; given up.", level=RunEvent.Level.ERROR, item=item
            )
            run_finish_if_done(run_id=item.run_id)
    pairs = list(expired.values_list("pk", "run_id"))
    if not pairs:
        return 0
    WorkItem.objects.filter(pk__in=[pk for pk, _ in pairs], state=WorkItem.State.RUNNING, lease_until__lt=now).update(
        state=WorkItem.State.PENDING, lease_owner="", lease_until=None
    )
    for run_id in {run_id for _, run_id in pairs}:
        run_dispatch(run_id=run_id)
    return len(pairs)


def lease_seconds() -> int:
    return settings.LABWEB_WORK_LEASE_SECONDS
