"""Verdicts per leaf, the tree's counters, the side-by-side rows, the comparison of two jobs, and exports."""

import csv
import io
from collections import defaultdict
from collections.abc import Sequence

from django.db import transaction
from django.db.models import Count, Q

from curation.models import Leaf
from evaluation.core.compare import VERDICTS, Side, Thresholds, compare, tally
from evaluation.models import EvaluationJob, LeafResult, Measurement, Role

TREE_FIELDS = ("improved", "unchanged", "regressed")


def sides(job: EvaluationJob) -> dict[str, dict[str, Side]]:
    """leaf path -> role -> its measures, from one grouped query per kind."""
    out: dict[str, dict[str, Side]] = defaultdict(lambda: {Role.CHECKPOINT: Side(), Role.BASE: Side()})
    judged = job.measurements.filter(kind=Measurement.Kind.JUDGED, judged=True)
    for path, role, rating, parseable in judged.values_list("leaf_path", "role", "rating", "parseable"):
        side = out[path][role]
        if parseable:
            side.ratings.append(rating)
        else:
            side.unparseable += 1
    picked = job.measurements.filter(kind=Measurement.Kind.CHOICE, picked__isnull=False)
    for path, role, choice, correct in picked.values_list("leaf_path", "role", "picked", "correct"):
        side = out[path][role]
        side.choices += 1
        side.correct += int(choice == correct)
    for result in job.leaf_results.all():
        out[result.leaf_path][Role.BASE].loss = result.base_loss
        out[result.leaf_path][Role.CHECKPOINT].loss = result.checkpoint_loss
    return out


@transaction.atomic
def results_compute(job: EvaluationJob) -> dict[str, int]:
    """Every leaf's measures and verdict; the job becomes the latest evaluation of its leaves."""
    thresholds = Thresholds(**job.thresholds) if job.thresholds else Thresholds()
    measured = sides(job)
    results = list(job.leaf_results.all())
    paths = [r.leaf_path for r in results]
    newer: set[str] = set()
    if job.base_model:
        # Evaluations of one leaf may finish in any order (after a CPU job, every phase's at once): the newest
        # job is the latest, whatever finished last. The leaves' rows serialise two jobs deciding it at once.
        list(Leaf.objects.select_for_update().filter(path__in=paths).order_by("pk").values_list("pk", flat=True))
        newer = set(
            LeafResult.objects.filter(leaf_path__in=paths, latest=True, job_id__gt=job.pk).values_list(
                "leaf_path", flat=True
            )
        )
    for result in results:
        both = measured[result.leaf_path]
        base, checkpoint = both[Role.BASE], both[Role.CHECKPOINT]
        result.base_judge, result.checkpoint_judge = base.judge, checkpoint.judge
        result.base_accuracy, result.checkpoint_accuracy = base.accuracy, checkpoint.accuracy
        result.judged = len(base.ratings) + len(checkpoint.ratings) + base.unparseable + checkpoint.unparseable
        result.unparseable = base.unparseable + checkpoint.unparseable
        result.verdict = compare(base, checkpoint, thresholds).verdict
        result.latest = bool(job.base_model) and result.leaf_path not in newer
    LeafResult.objects.bulk_update(
        results,
        [
            "base_judge",
            "checkpoint_judge",
            "base_accuracy",
            "checkpoint_accuracy",
            "judged",
            "unparseable",
            "verdict",
            "latest",
        ],
        batch_size=2000,
    )
    if job.base_model:
        older = LeafResult.objects.filter(leaf_path__in=set(paths) - newer, latest=True, job_id__lt=job.pk)
        older.update(latest=False)
    return tally(r.verdict for r in results)


def tree_counts(leaf_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """For curation.tree_counters: each leaf's verdict in its latest evaluation, one query."""
    rows = LeafResult.objects.filter(leaf_id__in=leaf_ids, latest=True).values_list("leaf_id", "verdict")
    return {leaf_id: {verdict: 1} for leaf_id, verdict in rows if verdict in TREE_FIELDS}


def unparseable_count(job: EvaluationJob) -> int:
    return job.measurements.filter(kind=Measurement.Kind.JUDGED, judged=True, parseable=False).count()


def job_summary(job: EvaluationJob) -> dict:
    verdicts = dict(job.leaf_results.values_list("verdict").annotate(n=Count("id")).order_by())
    counts = job.measurements.aggregate(
        n_judged=Count("id", filter=Q(kind=Measurement.Kind.JUDGED, judged=True)),
        n_unparseable=Count("id", filter=Q(kind=Measurement.Kind.JUDGED, judged=True, parseable=False)),
        n_failed=Count("id", filter=~Q(error="")),
        n_choices=Count("id", filter=Q(kind=Measurement.Kind.CHOICE)),
    )
    return {"verdicts": {v: verdicts.get(v, 0) for v in VERDICTS}, **{k[2:]: v for k, v in counts.items()}}


def set_summary(job: EvaluationJob) -> list[dict]:
    """Per evaluation set (the phase that trained its leaves): verdict counts and the mean change in rating."""
    results = list(job.leaf_results.all())
    out = []
    for name, paths in sorted(job.sets.items()):
        members = [r for r in results if r.leaf_path in set(paths)]
        deltas = [
            r.checkpoint_judge - r.base_judge
            for r in members
            if r.checkpoint_judge is not None and r.base_judge is not None
        ]
        out.append(
            {
                "set": name,
                "leaves": len(members),
                "verdicts": tally(r.verdict for r in members if r.verdict),
                "judge_delta": sum(deltas) / len(deltas) if deltas else None,
            }
        )
    return out


def side_by_side(job: EvaluationJob, *, leaf: str | None = None):
    """(question key, leaf, question, reference, base row, checkpoint row) for judged answers, in leaf order."""
    rows = job.measurements.filter(kind=Measurement.Kind.JUDGED)
    if leaf:
        rows = rows.filter(leaf_path=leaf)
    pairs: dict[tuple, dict] = {}
    for row in rows.order_by("leaf_path", "key"):
        pairs.setdefault((row.leaf_path, row.key), {})[row.role] = row
    return [
        {"leaf": path, "key": key, "question": (found.get(Role.CHECKPOINT) or found.get(Role.BASE)).question,
         "reference": (found.get(Role.CHECKPOINT) or found.get(Role.BASE)).reference,
         "base": found.get(Role.BASE), "checkpoint": found.get(Role.CHECKPOINT)}
        for (path, key), found in pairs.items()
    ]  # fmt: skip


def compare_jobs(first: EvaluationJob, second: EvaluationJob) -> list[dict]:
    """Per leaf of either job, both jobs' verdicts and rating changes side by side (phased against stacked)."""
    a = {r.leaf_path: r for r in first.leaf_results.all()}
    b = {r.leaf_path: r for r in second.leaf_results.all()}
    return [{"leaf": path, "first": a.get(path), "second": b.get(path)} for path in sorted(set(a) | set(b))]


EXPORT_FIELDS = (
    "leaf", "key", "kind", "role", "question", "reference", "answer", "rating", "parseable", "rationale",
    "choices", "correct", "picked", "error",
)  # fmt: skip


def export_rows(job: EvaluationJob):
    for row in job.measurements.order_by("leaf_path", "kind", "key", "role").iterator(chunk_size=2000):
        yield {
            "leaf": row.leaf_path, "key": row.key, "kind": row.kind, "role": row.role, "question": row.question,
            "reference": row.reference, "answer": row.answer, "rating": row.rating,
            "parseable": row.parseable if row.kind == Measurement.Kind.JUDGED and row.judged else None,
            "rationale": row.rationale, "choices": row.choices, "correct": row.correct, "picked": row.picked,
            "error": row.error,
        }  # fmt: skip


def leaf_rows(job: EvaluationJob) -> list[dict]:
    return [
        {
            "leaf": r.leaf_path, "sets": r.sets, "verdict": r.verdict, "base_judge": r.base_judge,
            "checkpoint_judge": r.checkpoint_judge, "base_accuracy": r.base_accuracy,
            "checkpoint_accuracy": r.checkpoint_accuracy, "base_loss": r.base_loss,
            "checkpoint_loss": r.checkpoint_loss, "judged": r.judged, "unparseable": r.unparseable,
        }
        for r in job.leaf_results.all()
    ]  # fmt: skip


def _cell(value):
    # A model's answer that starts like a formula must not run as one in a spreadsheet.
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value


def export_csv(job: EvaluationJob):
    """CSV lines, streamed: one row per measurement."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    yield buffer.getvalue()
    for row in export_rows(job):
        buffer.seek(0)
        buffer.truncate()
        writer.writerow({name: _cell(value) for name, value in {**row, "choices": " | ".join(row["choices"])}.items()})
        yield buffer.getvalue()
