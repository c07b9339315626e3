"""Reads of the generation app: run progress for the monitor, run and sample lists."""

from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import Count, FloatField, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Now

from curation.models import TaxonomySnapshot
from generation.models import GenerationRun, RunEvent, Sample, Teacher, WorkItem
from generation.sdg.pipelines import PipelineConfig, calls_if_accepted, plan_run
from generation.sdg.teachers.shared import budget_key, budget_states, redis_client

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

    @property
    def errors_by_kind(self) -> list[tuple[str, int]]:
        return self.error_kinds.most_common()

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


def run_progress(run: GenerationRun) -> RunProgress:
    """Everything the progress panel shows, in seven queries whatever the size of the run.

    Per-leaf and per-state counts are aggregated in the database. Kept samples are the done items' `kept`
    plus the Sample rows of items that ran and are not done, because `kept` is written when an item
    finishes. Teacher and stage counters live in JSON the workers publish at every heartbeat; the database
    sums them."""
    progress = RunProgress()
    items = WorkItem.objects.filter(run=run).order_by()
    per_state = {state: Count("pk", filter=Q(state=state)) for state in STATES}
    # A cancelled run's items stop at their next heartbeat: until then they run, or hold a lease, and change.
    in_flight = Count("pk", filter=Q(state=WorkItem.State.RUNNING) | Q(lease_until__gt=Now()))
    rows = items.values("leaf_path", "kind").annotate(
        items=Count("pk"), target=Sum("target"), in_flight=in_flight, **per_state
    )
    leaves: dict[str, LeafProgress] = {}
    for row in rows.order_by("leaf_path"):
        leaf = LeafProgress(**row)
        leaves.setdefault(leaf.leaf_path, leaf)
        progress.items += leaf.items
        progress.target += leaf.target or 0
        progress.in_flight += leaf.in_flight
        for state in STATES:
            progress.states[state] += row[state]

    # A done item's `kept` is its samples, counted when it finished; an item that has run and is not done
    # (running, handed back, given up) may have written more since, so its Sample rows are counted. Counting
    # every Sample row instead would read a million of them on every poll of a Merlinite-sized run.
    done = items.filter(state=WorkItem.State.DONE).values("leaf_path").annotate(n=Sum("kept"))
    unsettled = Sample.objects.filter(
        item__in=items.exclude(state=WorkItem.State.DONE).filter(attempts__gt=0).values("pk")
    )
    live = unsettled.order_by().values("leaf_path").annotate(n=Count("pk"))
    for row in [*done, *live]:
        progress.kept += row["n"] or 0
        if row["leaf_path"] in leaves:
            leaves[row["leaf_path"]].kept += row["n"] or 0

    # Teacher counters add up over every attempt (a retry goes on from them), so every item's count; stage
    # counters are the last attempt's, which a rerun replays and replaces, so a pending item's do not.
    teacher = _json_sums(items, "stats")
    progress.error_kinds.update({kind: int(n) for kind, n in _json_sums(items, "stats", "error_kinds").items()})
    published = items.exclude(state=WorkItem.State.PENDING)
    stages: dict[str, Counter] = {}
    for key, value in _json_sums(published, "counts").items():
        stage, _, outcome = key.rpartition(".")
        if stage:
            stages.setdefault(stage, Counter())[outcome] += int(value)
    troubled = published.filter(Q(state=WorkItem.State.FAILED) | ~Q(error=""))
    progress.error_count = troubled.count()
    rows = troubled.order_by("pk").values_list(
        "pk", "leaf_path", "seed_index", "chunk_index", "state", "attempts", "error"
    )
    for pk, leaf_path, seed_index, chunk_index, state, attempts, error in rows[:ERROR_ROWS]:
        progress.errors.append(ItemError(pk, leaf_path, _unit(seed_index, chunk_index), state, attempts, error))

    progress.teacher = {name: int(teacher[name]) for name in TEACHER_STATS}
    progress.teacher_seconds = round(float(teacher["seconds"]), 1)
    progress.stages = [
        StageCounts(stage, {outcome: counts[outcome] for outcome in sorted(counts, key=_outcome_key)})
        for stage, counts in sorted(stages.items(), key=lambda pair: _stage_key(pair[0]))
    ]
    progress.leaves = list(leaves.values())
    return progress


def _json_sums(items: QuerySet[WorkItem], column: str, inner: str = "") -> Counter:
    """Every numeric value of the items' JSON `column` (or of its object `inner`) summed by key, in the database:
    a Merlinite-sized run has 100,000 items, whose counters decoded one by one in Python take seconds."""
    query, params = items.order_by().values("pk").query.sql_with_params()
    if connection.vendor == "postgresql":
        value = f"w.{column} -> '{inner}'" if inner else f"w.{column}"
        sql = (
            f"SELECT e.key, SUM((e.value #>> '{{}}')::numeric) FROM generation_workitem w "
            f"CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof({value}) = 'object' THEN {value} "
            f"ELSE '{{}}'::jsonb END) e WHERE w.id IN ({query}) AND jsonb_typeof(e.value) = 'number' GROUP BY e.key"
        )
    else:
        path = f", '$.{inner}'" if inner else ""
        sql = (
            f"SELECT e.key, SUM(e.value) FROM generation_workitem w, json_each(w.{column}{path}) e "
            f"WHERE w.id IN ({query}) AND e.type IN ('integer', 'real') GROUP BY e.key"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return Counter({key: float(total) for key, total in cursor.fetchall()})


def leaves_for_monitor(leaves: list[LeafProgress]) -> list[LeafProgress]:
    """What an operator looks at first: leaves with failures, then those in flight, then waiting, then done."""

    def rank(leaf: LeafProgress) -> tuple:
        if leaf.failed:
            return (0, leaf.leaf_path)
        if leaf.running:
            return (1, leaf.leaf_path)
        if not leaf.finished:
            return (2, leaf.leaf_path)
        return (3, leaf.leaf_path)

    return sorted(leaves, key=rank)


def _per_run(queryset: QuerySet, aggregate) -> Coalesce:
    subquery = queryset.filter(run=OuterRef("pk")).order_by().values("run").annotate(value=aggregate).values("value")
    return Coalesce(Subquery(subquery[:1], output_field=IntegerField()), Value(0))


def run_list() -> QuerySet[GenerationRun]:
    """Runs, newest first, each with its item and sample totals (correlated subqueries: no row multiplication)."""
    items = WorkItem.objects.all()
    return GenerationRun.objects.select_related("teacher", "created_by", "baseline").annotate(
        items_total=_per_run(items, Count("pk")),
        items_done=_per_run(items.filter(state=WorkItem.State.DONE), Count("pk")),
        items_failed=_per_run(items.filter(state=WorkItem.State.FAILED), Count("pk")),
        target_total=_per_run(items, Sum("target")),
        kept_total=_per_run(Sample.objects.all(), Count("pk")),
    )


def run_percent(run: GenerationRun) -> int:
    """Percent processed for a run from `run_list()`."""
    return _percent(run.items_done + run.items_failed, run.items_total)


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
    """The teacher's measured time a call over every earlier run (the calls, not the waits for a slot)."""
    totals = WorkItem.objects.filter(run__teacher=teacher).aggregate(
        seconds=Sum(Cast(KT("stats__seconds"), FloatField())), calls=Sum(Cast(KT("stats__calls"), IntegerField()))
    )
    calls = totals["calls"] or 0
    return (totals["seconds"] / calls if calls and totals["seconds"] else None), calls


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
