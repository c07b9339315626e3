"""Reads of the generation app: run progress for the monitor, run and sample lists."""

from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import BigIntegerField, Case, Count, F, OuterRef, Q, QuerySet, Subquery, Sum, Value, When
from django.db.models.functions import Cast, Coalesce

from curation.models import TaxonomySnapshot
from generation.models import TROUBLED, GenerationRun, LeafCounter, RunCounter, RunEvent, Sample, Teacher, WorkItem
from generation.sdg.pipelines import PipelineConfig, calls_if_accepted, plan_run
from generation.sdg.teachers.shared import budget_key, budget_states, redis_client
from generation.services.counters import json_numbers

STATES = tuple(WorkItem.State.values)
TEACHER_STATS = ("calls", "cached", "retries", "errors", "prompt_tokens", "completion_tokens", "same_answers")
# Pipeline order, so the funnel reads top to bottom; stages a newer pipeline adds follow alphabetically.
STAGE_ORDER = (
    "contexts",
    "questions",
    "question_judge",
    "response",
    "pair_judge",
    "faithfulness",
    "relevance",
    "question_quality",
)
OUTCOME_ORDER = ("generated", "accepted", "rejected", "duplicate", "malformed")
ERROR_ROWS = 50
LEAF_ROWS = 200  # leaves the run page and the API's run detail show; the rest page through /api/runs/N/leaves/


@dataclass
class LeafProgress:
    leaf_path: str
    kind: str
    items: int
    done: int
    failed: int
    running: int
    pending: int
    cancelled: int
    target: int
    in_flight: int = 0
    kept: int = 0

    @property
    def finished(self) -> bool:
        return self.done + self.failed == self.items

    @property
    def percent(self) -> int:
        return _percent(self.done + self.failed, self.items)


@dataclass
class StageCounts:
    stage: str
    outcomes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


@dataclass
class ItemError:
    id: int
    leaf_path: str
    unit: str
    state: str
    attempts: int
    error: str


@dataclass
class RunProgress:
    items: int = 0
    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    kept: int = 0
    target: int = 0
    teacher: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TEACHER_STATS, 0))
    teacher_seconds: float = 0.0
    error_kinds: Counter = field(default_factory=Counter)  # the teacher's failed calls by TeacherError.kind
    stages: list[StageCounts] = field(default_factory=list)
    leaves: list[LeafProgress] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    error_count: int = 0
    in_flight: int = 0
    leaf_count: int = 0  # every leaf of the run; `leaves` may hold the first few

    @property
    def errors_by_kind(self) -> list[tuple[str, int]]:
        return self.error_kinds.most_common()

    @property
    def per_kept_sample(self) -> dict[str, float] | None:
        """What a kept sample cost: teacher calls (every attempt a server saw) and tokens; None before the first."""
        if not self.kept:
            return None
        teacher = self.teacher
        return {
            "calls": round(teacher["calls"] / self.kept, 2),
            "prompt_tokens": round(teacher["prompt_tokens"] / self.kept, 1),
            "completion_tokens": round(teacher["completion_tokens"] / self.kept, 1),
        }

    @property
    def processed(self) -> int:
        return self.states["done"] + self.states["failed"]

    @property
    def percent(self) -> int:
        """Work items processed (done or failed) of all; cancelled items are not progress."""
        return _percent(self.processed, self.items)

    @property
    def funnel(self) -> dict:
        """The stage counters as a table: one column per outcome any stage reported (None: not one of its outcomes)."""
        columns = sorted({outcome for stage in self.stages for outcome in stage.outcomes}, key=_outcome_key)
        rows = [
            {"stage": stage.stage, "cells": [(o, stage.outcomes.get(o)) for o in columns], "total": stage.total}
            for stage in self.stages
        ]
        return {"columns": columns, "rows": rows}


def _percent(part: int, whole: int) -> int:
    if not whole:
        return 0
    # Never show 100% before the last item is in.
    return min(int(100 * part / whole), 99) if part < whole else 100


def _unit(seed_index: int | None, chunk_index: int | None) -> str:
    return f"seed {seed_index + 1}" if seed_index is not None else f"chunk {(chunk_index or 0) + 1}"


def _stage_key(stage: str) -> tuple:
    return (STAGE_ORDER.index(stage), "") if stage in STAGE_ORDER else (len(STAGE_ORDER), stage)


def _outcome_key(outcome: str) -> tuple:
    return (OUTCOME_ORDER.index(outcome), "") if outcome in OUTCOME_ORDER else (len(OUTCOME_ORDER), outcome)


# LeafProgress's own order, so that a row makes one without naming its fields (a run has 20,000 leaves).
LEAF_COLUMNS = ("leaf_path", "kind", "items", "done", "failed", "running", "pending", "cancelled", "target", "kept")
# What an operator looks at first: leaves with failures, then those in flight, then waiting, then done.
LEAF_RANK = Case(
    When(failed__gt=0, then=Value(0)),
    When(running__gt=0, then=Value(1)),
    When(items__gt=F("done") + F("failed"), then=Value(2)),
    default=Value(3),
)


def run_progress(run: GenerationRun, *, leaves: int | None = None) -> RunProgress:
    """Everything the progress panel shows, in six small queries whatever the size of the run.

    What every item not running holds is summed in the run's counters (generation.services.counters): per leaf
    the items by state, targets and kept samples, per run the same totals and the teacher's and the stages'
    counters. The running items' own counters, which they publish at every heartbeat, are added here.

    `leaves`: only that many leaves, those an operator looks at first (failures, then work in flight, then
    waiting, then done); `leaf_count` says how many there are. Without it every leaf, by path."""
    progress = RunProgress()
    totals = Counter()
    rows = RunCounter.objects.filter(run=run).order_by().values("name").annotate(total=Sum("value"))
    for name, total in rows.values_list("name", "total"):
        totals[name] += total
    live: dict[str, int] = Counter()
    running = WorkItem.objects.filter(run=run, state=WorkItem.State.RUNNING).order_by()
    for leaf_path, kept, stats, counts in running.values_list("leaf_path", "kept", "stats", "counts"):
        live[leaf_path] += kept
        totals["kept"] += kept
        totals.update({f"stats:{key}": value for key, value in json_numbers(stats)})
        totals.update({f"error_kinds:{key}": value for key, value in json_numbers((stats or {}).get("error_kinds"))})
        totals.update({f"counts:{key}": value for key, value in json_numbers(counts)})

    progress.items, progress.target, progress.kept = (round(totals[name]) for name in ("items", "target", "kept"))
    progress.states = {state: round(totals[f"state:{state}"]) for state in STATES}
    progress.in_flight = progress.states[WorkItem.State.RUNNING]
    counters = LeafCounter.objects.filter(run=run)
    if leaves is None:
        counters = counters.order_by("leaf_path")
    else:
        progress.leaf_count = counters.count()
        counters = counters.alias(rank=LEAF_RANK).order_by("rank", "leaf_path")[:leaves]
    for row in counters.values_list(*LEAF_COLUMNS):
        progress.leaves.append(LeafProgress(*row[:-1], in_flight=row[5], kept=row[-1] + live[row[0]]))
    if leaves is None:
        progress.leaf_count = len(progress.leaves)

    stages: dict[str, Counter] = {}
    for name, value in totals.items():
        prefix, _, key = name.partition(":")
        if prefix == "error_kinds" and value:
            progress.error_kinds[key] = round(value)
        elif prefix == "counts":
            stage, _, outcome = key.rpartition(".")
            if stage:
                stages.setdefault(stage, Counter())[outcome] += round(value)

    # Failed, or failed a try: the index of troubled items holds just these.
    troubled = WorkItem.objects.filter(TROUBLED, run=run).exclude(state=WorkItem.State.PENDING)
    progress.error_count = troubled.count()
    rows = troubled.order_by("pk").values_list(
        "pk", "leaf_path", "seed_index", "chunk_index", "state", "attempts", "error"
    )
    for pk, leaf_path, seed_index, chunk_index, state, attempts, error in rows[:ERROR_ROWS]:
        progress.errors.append(ItemError(pk, leaf_path, _unit(seed_index, chunk_index), state, attempts, error))

    progress.teacher = {name: round(totals[f"stats:{name}"]) for name in TEACHER_STATS}
    progress.teacher_seconds = round(float(totals["stats:seconds"]), 1)
    progress.stages = [
        StageCounts(stage, {outcome: counts[outcome] for outcome in sorted(counts, key=_outcome_key)})
        for stage, counts in sorted(stages.items(), key=lambda pair: _stage_key(pair[0]))
    ]
    return progress


def run_leaves(run: GenerationRun, counters: list[LeafCounter]) -> list[LeafProgress]:
    """Leaves of the run from their counters (a page of its `LeafCounter` rows), running items' kept samples added."""
    running = WorkItem.objects.filter(
        run=run, state=WorkItem.State.RUNNING, leaf_path__in=[c.leaf_path for c in counters]
    )
    live = Counter()
    for leaf_path, kept in running.order_by().values_list("leaf_path", "kept"):
        live[leaf_path] += kept
    return [
        LeafProgress(
            *(getattr(counter, name) for name in LEAF_COLUMNS[:-1]),
            in_flight=counter.running,
            kept=counter.kept + live[counter.leaf_path],
        )
        for counter in counters
    ]


def _counted(name: str) -> Coalesce:
    """A run's counter `name` (the sum of its rows), as an annotation of runs."""
    rows = RunCounter.objects.filter(run=OuterRef("pk"), name=name).order_by().values("run")
    total = rows.annotate(total=Cast(Sum("value"), BigIntegerField())).values("total")
    return Coalesce(Subquery(total[:1], output_field=BigIntegerField()), Value(0))


def _kept_live() -> Coalesce:
    """The samples a run's running items published at their last heartbeat, as an annotation."""
    running = WorkItem.objects.filter(run=OuterRef("pk"), state=WorkItem.State.RUNNING).order_by().values("run")
    rows = running.annotate(n=Sum("kept")).values("n")
    return Coalesce(Subquery(rows[:1], output_field=BigIntegerField()), Value(0))


def run_list() -> QuerySet[GenerationRun]:
    """Runs, newest first, each with its item and sample totals, from the run's counters."""
    return GenerationRun.objects.select_related("teacher", "created_by", "baseline").annotate(
        items_total=_counted("items"),
        items_done=_counted("state:done"),
        items_failed=_counted("state:failed"),
        target_total=_counted("target"),
        kept_total=_counted("kept") + _kept_live(),
    )


def run_percent(run: GenerationRun) -> int:
    """Percent processed for a run from `run_list()`."""
    return _percent(run.items_done + run.items_failed, run.items_total)


def run_totals(run_ids: list[int]) -> dict[int, dict[str, int]]:
    """Each run's items, finished items (done, failed or cancelled) and kept samples, from its counters, in one
    query."""
    rows = GenerationRun.objects.filter(pk__in=run_ids).annotate(
        items_total=_counted("items"),
        items_finished=_counted("state:done") + _counted("state:failed") + _counted("state:cancelled"),
        kept_total=_counted("kept") + _kept_live(),
    )
    return {
        pk: {"items": items, "finished": finished, "kept": kept}
        for pk, items, finished, kept in rows.values_list("pk", "items_total", "items_finished", "kept_total")
    }


def run_events(run: GenerationRun, *, limit: int | None = 20) -> QuerySet[RunEvent]:
    events = RunEvent.objects.filter(run=run).order_by("-created_at", "-id")
    return events[:limit] if limit else events


def teacher_list() -> QuerySet[Teacher]:
    return Teacher.objects.annotate(run_count=Count("runs")).order_by("name")


@dataclass
class EndpointView:
    base_url: str
    max_concurrency: int
    in_flight: int | None
    state: str  # "up", "out" (failed; tried again after retry_in_seconds) or "unknown"
    retry_in_seconds: float = 0.0
    failures: int = 0
    error: str = ""


def teacher_endpoints(teacher: Teacher) -> list[EndpointView]:
    """Each server of the teacher, with its calls in flight over every worker process (from the shared budget
    in Redis) and whether it is out after failing. Unknown when the budget is per process or Redis is away."""
    endpoints = teacher.endpoints
    if not endpoints:
        return []
    if settings.LABWEB_TEACHER_BUDGET != "redis":
        return [EndpointView(url, limit, None, "unknown") for url, limit in endpoints]
    key = budget_key(teacher.model, [url for url, _ in endpoints])
    states = budget_states(redis_client(settings.REDIS_URL), key, [limit for _, limit in endpoints])
    return [
        EndpointView(
            url,
            limit,
            state.in_flight if state.known else None,
            "unknown" if not state.known else "out" if state.down_seconds > 0 else "up",
            round(state.down_seconds, 1),
            state.failures,
            state.error,
        )
        for (url, limit), state in zip(endpoints, states, strict=True)
    ]


def sample_list(*, run: int | None = None, leaf_path: str = "", kind: str = "", q: str = "") -> QuerySet[Sample]:
    """Samples for the list page, without the heavy columns (raw teacher output, response, context)."""
    samples = Sample.objects.defer("raw", "response", "context", "rationales", "prompts").order_by("leaf_path", "id")
    if run:
        samples = samples.filter(run_id=run)
    if leaf_path:
        samples = under_path(samples, leaf_path)
    if kind:
        samples = samples.filter(kind=kind)
    if q:
        samples = samples.filter(question__icontains=q)
    return samples


def under_path(queryset: QuerySet, path: str, field_name: str = "leaf_path") -> QuerySet:
    """Rows whose leaf is `path` or lies under the folder `path`."""
    path = path.strip().strip("/")
    return queryset.filter(Q(**{field_name: path}) | Q(**{f"{field_name}__startswith": path + "/"}))


# A teacher on the CPU takes tens of seconds a call: a LAB-sized target there would take hours.
SAMPLES_PER_LEAF = 30
LOCAL_SAMPLES_PER_LEAF = 2


def run_samples_per_leaf_default(teacher: Teacher | None) -> int:
    """The samples per leaf a new run on `teacher` offers."""
    if teacher is not None and teacher.backend == Teacher.Backend.LOCAL:
        return LOCAL_SAMPLES_PER_LEAF
    return SAMPLES_PER_LEAF


@dataclass
class RunEstimate:
    items: int
    calls: int  # when the first round of every item meets its target
    most_calls: int  # when every item uses every round
    concurrency: int
    seconds_per_call: float | None  # measured over the teacher's earlier runs; None before its first call
    measured_calls: int = 0

    @property
    def seconds(self) -> float | None:
        if self.seconds_per_call is None:
            return None
        return self.calls * self.seconds_per_call / self.concurrency

    @property
    def most_seconds(self) -> float | None:
        if self.seconds_per_call is None:
            return None
        return self.most_calls * self.seconds_per_call / self.concurrency

    @property
    def duration(self) -> str:
        return _duration(self.seconds)

    @property
    def most_duration(self) -> str:
        return _duration(self.most_seconds)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def teacher_seconds_per_call(teacher: Teacher) -> tuple[float | None, int]:
    """The teacher's measured time a call over every earlier run (the calls, not the waits for a slot), from the
    runs' counters (items still running are left out)."""
    rows = RunCounter.objects.filter(run__teacher=teacher, name__in=["stats:seconds", "stats:calls"]).order_by()
    totals = dict(rows.values("name").annotate(total=Sum("value")).values_list("name", "total"))
    calls = round(totals.get("stats:calls") or 0)
    seconds = totals.get("stats:seconds")
    return (seconds / calls if calls and seconds else None), calls


def run_estimate(
    *,
    teacher: Teacher,
    scope: str = GenerationRun.Scope.ALL,
    baseline: TaxonomySnapshot | None = None,
    leaf_ids: list[int] | None = None,
    samples_per_leaf: int = SAMPLES_PER_LEAF,
    config: dict | None = None,
) -> RunEstimate:
    """What a run with these settings would cost: its work items, its teacher calls and, once the teacher has
    answered before, about how long. Plans the leaves as `run_create` does (`plan_run`), and writes nothing."""
    from generation.services.runs import _leaf_source, _select_leaves

    pipeline = PipelineConfig.from_dict(config or {})
    leaves = map(_leaf_source, _select_leaves(scope, baseline, leaf_ids))
    plan = plan_run(leaves, samples_per_leaf=samples_per_leaf, context_tokens=teacher.context_tokens)
    items = len(plan.units)
    calls = sum(calls_if_accepted(unit, pipeline) for unit in plan.units)
    seconds_per_call, measured = teacher_seconds_per_call(teacher)
    return RunEstimate(
        items=items,
        calls=calls,
        most_calls=calls * pipeline.max_rounds,
        concurrency=max(1, teacher.total_concurrency),
        seconds_per_call=seconds_per_call,
        measured_calls=measured,
    )
