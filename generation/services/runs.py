"""Generation runs: planning the work items, dispatching them, pause, cancel, resume and completion.

Every change of a run's status goes through `labweb.jobs.transition` (one conditional UPDATE, the row count
decides), as every other kind of job does.
"""

import secrets
from collections import Counter
from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from curation.models import Kind, Leaf, TaxonomySnapshot
from curation.selectors import leaf_qna, taxonomy_diff
from generation.models import GenerationRun, RunEvent, Sample, Teacher, WorkItem
from generation.sdg.pipelines import KNOWLEDGE, SKILLS, LeafSource, LeafSpec, PipelineConfig, Unit, plan_run
from generation.sdg.prompts import prompt_versions
from generation.sdg.teachers import FAILURE_CAUSES, TeacherClient, TeacherError, probe
from generation.services.bulk import bulk_insert
from generation.services.counters import counters_planned, items_change
from generation.services.samples import samples_kept, samples_mark_duplicates
from generation.services.teachers import TEACHER_FIELDS, teacher_client, teacher_quality_warning
from labweb.errors import ConflictError, LabError
from labweb.jobs import broker_messages, send_task, send_task_on_commit, transition

Status = GenerationRun.Status
ACTIVE = (Status.QUEUED, Status.RUNNING)
# A run that stopped and may go on: resume (or "retry failed items") moves it back to ACTIVE.
STOPPED = (Status.PAUSED, Status.CANCELLED, Status.FAILED, Status.PARTIAL, Status.SUCCEEDED)
DISPATCH_BATCH = 500


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


def _leaf_source(leaf: Leaf) -> LeafSource:
    if not leaf.is_valid:
        return LeafSource(path=leaf.path, spec=None, problem=leaf.problems[0]["message"] if leaf.problems else "")
    qna = leaf_qna(leaf, leaf.seeds.all())
    spec = LeafSpec(
        path=leaf.path,
        kind=KNOWLEDGE if leaf.kind == Kind.KNOWLEDGE else SKILLS,
        seeds=qna.get("seed_examples") or [],
        task_description=leaf.task_description or "",
        domain=leaf.domain or "",
        document_outline=leaf.document_outline or "",
    )
    return LeafSource(path=leaf.path, spec=spec, documents=tuple(document.content for document in leaf.documents.all()))


def _select_leaves(scope: str, baseline: TaxonomySnapshot | None, leaf_ids: list[int] | None) -> list[Leaf]:
    leaves = Leaf.objects.prefetch_related("seeds", "documents").order_by("path")
    if scope == GenerationRun.Scope.CHANGED:
        return list(leaves.filter(path__in=taxonomy_diff(baseline=baseline).changed))
    if scope == GenerationRun.Scope.SELECTED:
        if not leaf_ids:
            raise LabError("Choose at least one leaf.", field="leaves")
        return list(leaves.filter(pk__in=leaf_ids))
    return list(leaves)


def _pipeline_config(teacher: Teacher, config: dict | None) -> PipelineConfig:
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
        return PipelineConfig.from_dict(config)
    except TypeError as exc:
        raise LabError(f"Bad pipeline configuration: {exc}.", field="config") from None


def _work_item(run: GenerationRun, leaf: Leaf, unit: Unit, specs: dict) -> dict:
    """A planned item's fields. A leaf's skills units share one frozen spec (`specs`, by leaf path), which is then
    made, and encoded for the database, once."""
    spec = specs.get(leaf.path) if unit.chunk is None else None
    if spec is None:
        frozen = specs[leaf.path]["leaf"] if leaf.path in specs else asdict(unit.leaf)
        spec = {"leaf": frozen, "chunk": unit.chunk}
        specs.setdefault(leaf.path, spec)
    return {
        "run_id": run.pk,
        "leaf_id": leaf.pk,
        "leaf_path": leaf.path,
        "leaf_hash": leaf.content_hash,
        "kind": unit.leaf.kind,
        "seed_index": unit.seed_index,
        "chunk_index": unit.chunk_index,
        "unit": unit.name,
        "spec": spec,
        "target": unit.target,
    }


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
    pipeline = _pipeline_config(teacher, config)
    leaves = _select_leaves(scope, baseline, leaf_ids)
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
    plan = plan_run(
        map(_leaf_source, leaves),
        samples_per_leaf=samples_per_leaf,
        context_tokens=teacher.context_tokens,
        min_seeds=min_seeds,
    )
    for skipped in plan.skipped:
        _event(run, f"Skipped: {skipped.reason}.", level=RunEvent.Level.ERROR, leaf_path=skipped.path)
    if not plan.units:
        transition(
            run,
            to=Status.FAILED,
            allowed=[Status.QUEUED],
            error="Nothing to generate: no leaf in scope can be generated from (see the run's log).",
        )
        return run
    by_path = {leaf.path: leaf for leaf in leaves}
    specs: dict[str, dict] = {}
    items = [_work_item(run, by_path[unit.leaf.path], unit, specs) for unit in plan.units]
    bulk_insert(WorkItem, items)
    counters_planned(run.pk, items)
    _event(run, f"Planned {len(plan.units)} work items over {plan.leaves} leaves, {samples_per_leaf} samples per leaf.")
    if warning := teacher_quality_warning(teacher):
        _event(run, warning, level=RunEvent.Level.WARNING)
    send_task_on_commit("generation.tasks.dispatch_run", run.pk)
    return run


def run_teacher(run: GenerationRun) -> TeacherClient:
    """The teacher as the run recorded it: editing the teacher mid-run must not change what samples say."""
    frozen = {name: value for name, value in run.teacher_config.items() if name in TEACHER_FIELDS}
    return teacher_client(Teacher(**frozen, api_key=run.teacher.api_key))


def run_quality_warning(run: GenerationRun) -> str:
    """What to expect of the run's teacher as the run recorded it ("" for a server's model)."""
    frozen = {name: value for name, value in run.teacher_config.items() if name in TEACHER_FIELDS}
    return teacher_quality_warning(Teacher(**frozen))


def run_start(*, run_id: int) -> int:
    """Ask the teacher whether it answers, then send the run's items; return how many were sent.

    A teacher that cannot be reached pauses the run with its error (resume it once the teacher is back) instead
    of failing every item in turn; one that cannot work at all (a model that does not load, a refused key)
    fails it. Run by the dispatch task, on a worker: a create or resume request never waits on the teacher.
    """
    run = GenerationRun.objects.select_related("teacher").get(pk=run_id)
    if run.status not in ACTIVE:
        return 0
    try:
        probe(run_teacher(run))
    except TeacherError as error:
        if error.retryable:
            run_pause(run_id=run_id, message=error.message)
        else:
            run_fail(run_id=run_id, message=error.message)
        return 0
    return run_dispatch(run_id=run_id)


def run_dispatch(*, run_id: int) -> int:
    """Send a task for every pending item of an active run that has none on its way; return how many were sent.

    A batch is marked and sent in one transaction: a sender that dies midway leaves its batch unmarked, to be
    sent by the next dispatch (a second message for an item is harmless: items are claimed). So dispatching
    twice, or a dispatch task delivered twice, sends nothing more. An item waiting out its retry delay is left
    for a later dispatch (the reaper's) once the delay is over.
    """
    sent = 0
    while True:
        with transaction.atomic():
            batch = list(
                WorkItem.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(_unsent(timezone.now()), run_id=run_id, run__status__in=ACTIVE)
                .order_by("pk")
                .values_list("pk", flat=True)[:DISPATCH_BATCH]
            )
            if not batch:
                return sent
            WorkItem.objects.filter(pk__in=batch).update(queued_at=timezone.now())
            for item_id in batch:
                send_task("generation.tasks.process_item", item_id)
        sent += len(batch)


def _unsent(now) -> Q:
    """Pending items no task is on its way to, whose retry delay (if any) is over."""
    return Q(state=WorkItem.State.PENDING, queued_at__isnull=True) & (Q(retry_at__isnull=True) | Q(retry_at__lte=now))


@transaction.atomic
def run_cancel(*, run: GenerationRun, user) -> GenerationRun:
    transition(
        run,
        to=Status.CANCELLED,
        allowed=[*ACTIVE, Status.PAUSED],
        refusal="The run is {status}; only a queued, running or paused run can be cancelled.",
    )
    # Running items see the cancellation at their next heartbeat and stop there, keeping what they wrote.
    items_change(WorkItem.objects.filter(run=run, state=WorkItem.State.PENDING), state=WorkItem.State.CANCELLED)
    _event(run, f"Cancelled by {user}.", level=RunEvent.Level.WARNING)
    return run


def run_pause(*, run_id: int, message: str) -> bool:
    """Stop a run whose teacher cannot be reached, keeping everything; `run_resume` goes on from there.

    Items in flight see the pause at their next heartbeat and hand themselves back (pending, not failed); the
    messages still queued for pending items find the run paused and do nothing, so the resume sends them again.
    """
    run = GenerationRun.objects.get(pk=run_id)
    paused = transition(run, to=Status.PAUSED, allowed=ACTIVE, error=f"Paused: {message}")
    if paused:
        WorkItem.objects.filter(run_id=run_id, state=WorkItem.State.PENDING).update(queued_at=None)
        _event(
            run,
            f"Paused: {message} Resume the run once the teacher is back; nothing done so far is lost.",
            level=RunEvent.Level.ERROR,
        )
    return paused


def _stopped(now) -> Q:
    """Items that stopped short of done: cancelled, failed, or held by a worker whose lease ran out."""
    return Q(state__in=[WorkItem.State.CANCELLED, WorkItem.State.FAILED]) | Q(
        state=WorkItem.State.RUNNING, lease_until__lt=now
    )


def run_resume_refusal(*, run: GenerationRun) -> str | None:
    """Why `run_resume` would refuse the run now, or None when it would resume it (the run page asks too)."""
    if not run.items.exclude(state=WorkItem.State.DONE).exists():
        return "Every work item of this run is done (or it has none); there is nothing to resume."
    if run.is_active and not run.items.filter(_stopped(timezone.now())).exists():
        return "The run is still going; resume it once it stops."
    return None


def run_retry_failed_refusal(*, run: GenerationRun) -> str | None:
    """Why `run_retry_failed` would refuse the run now, or None when it would take it."""
    if run.is_active:
        return "The run is still going; its failed items are tried again once it ends."
    if not run.items.filter(state=WorkItem.State.FAILED).exists():
        return "No work item of this run failed; there is nothing to retry."
    return None


def run_teacher_changes(*, run: GenerationRun) -> dict[str, tuple]:
    """The teacher settings that changed since the run recorded them: {name: (the run's, the teacher's now)}."""
    then = {name: value for name, value in run.teacher_config.items() if name != "earlier"}
    now = run.teacher.public_config()
    # A setting the run did not record is newer than the run: it is no change of the teacher's.
    return {name: (then[name], value) for name, value in now.items() if name in then and then[name] != value}


@transaction.atomic
def run_resume(*, run: GenerationRun, user, with_current_teacher: bool = False) -> GenerationRun:
    """Start again what is not done: paused, cancelled, failed and abandoned items. Done items and samples stay.

    A paused run's teacher is asked again before anything is sent (`run_start`): still unreachable, it pauses again.
    A run asks the teacher as it recorded it when it started; `with_current_teacher` records the teacher as it
    is now for the remaining work (the settings it replaces stay in `teacher_config["earlier"]`, and every
    sample names the model that made it).
    """
    run = GenerationRun.objects.select_for_update().get(pk=run.pk)
    refusal = run_resume_refusal(run=run)
    if refusal:
        raise ConflictError(refusal, field="status")
    changes = run_teacher_changes(run=run) if with_current_teacher else {}
    if changes:
        then = {name: value for name, value in run.teacher_config.items() if name != "earlier"}
        run.teacher_config = run.teacher.public_config() | {"earlier": [*run.teacher_config.get("earlier", []), then]}
        run.save(update_fields=["teacher_config"])
        changed = ", ".join(f"{name} {old!r} → {new!r}" for name, (old, new) in changes.items())
        _event(run, f"The remaining work uses the teacher as it is now ({changed}).", level=RunEvent.Level.WARNING)
    which = _stopped(timezone.now())
    if run.status == Status.CANCELLED:
        # Items a cancel stopped; a worker still finishing one loses its lease at its next heartbeat.
        which |= Q(state=WorkItem.State.RUNNING)
    if run.status == Status.PAUSED:
        which |= Q(state=WorkItem.State.PENDING)  # their messages found the run paused and were dropped
    items = WorkItem.objects.filter(run=run).filter(which)
    return _restart(run, items, f"Resumed by {user}")


@transaction.atomic
def run_retry_failed(*, run: GenerationRun, user) -> GenerationRun:
    """Try a finished run's failed items again, each with its full count of retries; the rest stays as it is.

    What a failed item already asked the teacher is replayed from the response cache, not asked again.
    """
    run = GenerationRun.objects.select_for_update().get(pk=run.pk)
    refusal = run_retry_failed_refusal(run=run)
    if refusal:
        raise ConflictError(refusal, field="status")
    failed = WorkItem.objects.filter(run=run, state=WorkItem.State.FAILED)
    return _restart(run, failed, f"Failed items retried by {user}")


def _restart(run: GenerationRun, items, why: str) -> GenerationRun:
    reset = items_change(
        items,
        state=WorkItem.State.PENDING,
        queued_at=None,
        retry_at=None,
        failures=0,
        lease_owner="",
        lease_until=None,
        error="",
    )
    transition(
        run,
        to=Status.RUNNING if run.started_at else Status.QUEUED,
        allowed=[*ACTIVE, *STOPPED],
        refusal="The run is {status}; it cannot be started again now.",
        error="",
        finished_at=None,
    )
    _event(run, f"{why}: {reset} work items queued again.")
    send_task_on_commit("generation.tasks.dispatch_run", run.pk)
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
    failed = counts["failed"]
    if counts["done"] and kept:
        status = Status.PARTIAL if failed else Status.SUCCEEDED
        error = ""
        if failed:
            kind, first = _failure_cause(run_id)
            why = f" ({FAILURE_CAUSES[kind]}: {first.rstrip('.')})" if kind != "other" else ""
            error = (
                f"Done with {failed} failed work item{'s' if failed != 1 else ''}{why}. See the list of failed "
                'items; "Retry failed items" tries them again.'
            )
    else:
        status = Status.FAILED
        error = _failure_headline(run_id, failed) if failed else ""
    if counts["done"] and not kept and not failed:
        error = (
            "No sample passed the judges: see the stage counters for where candidates were dropped (a small "
            "teacher often ignores the output format)."
        )
    run = GenerationRun(pk=run_id)
    finished = transition(run, to=status, allowed=ACTIVE, error=error)
    if finished:
        if status in (Status.SUCCEEDED, Status.PARTIAL):
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
            level={Status.SUCCEEDED: RunEvent.Level.INFO, Status.PARTIAL: RunEvent.Level.WARNING}.get(
                status, RunEvent.Level.ERROR
            ),
        )
    return finished


def _failure_cause(run_id: int) -> tuple[str, str]:
    """What stopped most of a run's failed items (a FAILURE_CAUSES kind), and the error of the first it stopped."""
    rows = WorkItem.objects.filter(run_id=run_id, state=WorkItem.State.FAILED).order_by("pk")
    causes = Counter()
    first: dict[str, str] = {}
    for kind, message in rows.values_list("stats__failure", "error"):
        kind = kind if kind in FAILURE_CAUSES else "other"
        causes[kind] += 1
        first.setdefault(kind, message)
    kind = causes.most_common(1)[0][0] if causes else "other"
    return kind, first.get(kind, "")


def _failure_headline(run_id: int, failed: int) -> str:
    """ "4 work items failed: the teacher was unreachable (Cannot reach …)": the most common cause, in the
    words of the first item it stopped."""
    kind, first = _failure_cause(run_id)
    items = "1 work item" if failed == 1 else f"{failed} work items"
    if kind == "other":
        return f"{items} failed; see the log." + (f" The first: {first}" if first else "")
    return f"{items} failed: {FAILURE_CAUSES[kind]} ({first.rstrip('.')})."


def run_fail(*, run_id: int, message: str) -> None:
    """Stop a run that cannot go on at all (its teacher cannot be loaded, or refuses its key)."""
    with transaction.atomic():
        run = GenerationRun(pk=run_id)
        if transition(run, to=Status.FAILED, allowed=ACTIVE, error=message):
            pending = WorkItem.objects.filter(run_id=run_id, state=WorkItem.State.PENDING)
            items_change(pending, state=WorkItem.State.CANCELLED)
            _event(run, message, level=RunEvent.Level.ERROR)


def requeue_expired() -> int:
    """Put items whose worker died (lease expired) back in the queue; return how many. The periodic reaper
    calls this; it also sends what no dispatch sent (a dispatch task lost with its worker).

    An item abandoned `LABWEB_WORK_MAX_ATTEMPTS` times is failed instead: something in it kills workers.
    """
    now = timezone.now()
    expired = WorkItem.objects.filter(state=WorkItem.State.RUNNING, lease_until__lt=now, run__status__in=ACTIVE)
    # Attempts that ended in a failure of their own (and a retry) are not abandonments.
    doomed = list(expired.filter(attempts__gte=F("failures") + settings.LABWEB_WORK_MAX_ATTEMPTS).select_related("run"))
    for item in doomed:
        if items_change(
            WorkItem.objects.filter(pk=item.pk, state=WorkItem.State.RUNNING, lease_until__lt=now),
            state=WorkItem.State.FAILED,
            lease_owner="",
            lease_until=None,
            finished_at=now,
            kept=samples_kept(),
            error=f"Abandoned {item.attempts - item.failures} times: the worker died each time it ran this item.",
        ):
            _event(
                item.run,
                f"{item}: abandoned {item.attempts - item.failures} times; given up.",
                level=RunEvent.Level.ERROR,
                item=item,
            )
            run_finish_if_done(run_id=item.run_id)
    pairs = list(expired.values_list("pk", "run_id"))
    if pairs:
        # What the dead worker wrote is kept: the samples are counted in, as a hand-back counts them.
        items_change(
            WorkItem.objects.filter(pk__in=[pk for pk, _ in pairs], state=WorkItem.State.RUNNING, lease_until__lt=now),
            state=WorkItem.State.PENDING,
            lease_owner="",
            lease_until=None,
            kept=samples_kept(),
        )
        # The tasks a dead worker had taken and not yet started died with it, and nothing says which they were:
        # every pending item of its runs is sent again (an item claimed meanwhile skips the second message).
        WorkItem.objects.filter(run_id__in={run_id for _, run_id in pairs}, state=WorkItem.State.PENDING).update(
            queued_at=None
        )
    _unsend_lost(now)
    unsent = WorkItem.objects.filter(_unsent(now), run__status__in=ACTIVE)
    for run_id in unsent.order_by().values_list("run_id", flat=True).distinct():
        run_dispatch(run_id=run_id)
    return len(pairs)


def _unsend_lost(now) -> None:
    """Mark unsent the pending items whose messages the broker lost (Redis keeps none on disk: a restart loses every
    message no worker has taken), so that the dispatch below sends them again.

    Told from a queue that is merely long by three things at once: items marked sent LABWEB_QUEUED_RESEND_SECONDS
    ago or more, not one item running anywhere (a worker with messages to take would be at one), and an empty
    `generation` queue. Workers that are down leave their messages in the queue, so they are not sent again and
    again; a worker that prefetched some runs items, so a lost message is found only once the queue runs dry.
    """
    grace = now - timedelta(seconds=settings.LABWEB_QUEUED_RESEND_SECONDS)
    stale = WorkItem.objects.filter(state=WorkItem.State.PENDING, queued_at__lt=grace, run__status__in=ACTIVE)
    if not stale.exists() or WorkItem.objects.filter(state=WorkItem.State.RUNNING, run__status__in=ACTIVE).exists():
        return
    if broker_messages(settings.CELERY_TASK_ROUTES["generation.tasks.*"]["queue"]) != 0:
        return
    for run_id in stale.order_by().values_list("run_id", flat=True).distinct():
        waiting = stale.filter(run_id=run_id).update(queued_at=None)
        _event(
            GenerationRun.objects.get(pk=run_id),
            f"The broker holds no message for {waiting:,} queued {'item' if waiting == 1 else 'items'} and no "
            "worker is at one (was it restarted?); sent again.",
            level=RunEvent.Level.WARNING,
        )
