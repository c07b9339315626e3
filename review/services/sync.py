"""Opening a review item for every sample generation writes (and for samples written before review existed)."""

from collections import Counter as Tally

from django.db import connection, transaction

from generation.models import Sample
from review.models import Counter, ReviewItem, ReviewPolicy
from review.services.counters import counters_move

# The judge whose score orders the queue: the last one each pipeline asks.
SCORE_KEYS = ("pair", "relevance")
CHUNK = 2000


def judge_score(scores: dict) -> float:
    for key in SCORE_KEYS:
        value = (scores or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.0


def _policy(run_id: int) -> tuple[int, str]:
    policy = ReviewPolicy.objects.filter(run_id=run_id).first()
    return (policy.required, policy.rule) if policy else (1, "unanimous")


def items_open(*, samples) -> int:
    """Open pending items for `samples` (a Sample queryset) that have none; count them in. Returns how many."""
    opened = 0
    policies: dict[int, tuple[int, str]] = {}
    fields = (
        "pk",
        "run_id",
        "leaf_id",
        "leaf_path",
        "kind",
        "teacher_model",
        "scores",
        "duplicate_of_id",
        "created_at",
    )
    pending = samples.filter(review__isnull=True).order_by("pk").values_list(*fields)
    last = 0
    while True:
        rows = list(pending.filter(pk__gt=last)[:CHUNK])
        if not rows:
            return opened
        last = rows[-1][0]
        items = []
        moves: Tally = Tally()
        for pk, run_id, leaf_id, leaf_path, kind, teacher_model, scores, duplicate_of_id, created_at in rows:
            if run_id not in policies:
                policies[run_id] = _policy(run_id)
            required, rule = policies[run_id]
            items.append(
                ReviewItem(
                    sample_id=pk,
                    run_id=run_id,
                    leaf_id=leaf_id,
                    leaf_path=leaf_path,
                    kind=kind,
                    teacher_model=teacher_model,
                    score=judge_score(scores),
                    is_duplicate=duplicate_of_id is not None,
                    created_at=created_at,
                    required=required,
                    rule=rule,
                )
            )
            moves[(run_id, leaf_path, leaf_id, None, "pending")] += 1
        with transaction.atomic():
            ReviewItem.objects.bulk_create(items, ignore_conflicts=True)
            counters_move(moves)
        opened += len(items)


def review_sync() -> int:
    """Open items for all samples without one, set-based on PostgreSQL (a million samples in one statement)."""
    if connection.vendor != "postgresql":
        return items_open(samples=Sample.objects.all())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            WITH opened AS (
                INSERT INTO review_reviewitem (sample_id, run_id, leaf_id, leaf_path, kind, teacher_model, score,
                    is_duplicate, created_at, state, version, required, rule, votes)
                SELECT s.id, s.run_id, s.leaf_id, s.leaf_path, s.kind, s.teacher_model,
                    COALESCE(
                        CASE WHEN jsonb_typeof(s.scores::jsonb -> 'pair') = 'number'
                             THEN (s.scores::jsonb ->> 'pair')::float END,
                        CASE WHEN jsonb_typeof(s.scores::jsonb -> 'relevance') = 'number'
                             THEN (s.scores::jsonb ->> 'relevance')::float END,
                        0),
                    s.duplicate_of_id IS NOT NULL, s.created_at, 'pending', 1,
                    COALESCE(p.required, 1), COALESCE(p.rule, 'unanimous'), 0
                FROM generation_sample s
                LEFT JOIN review_reviewpolicy p ON p.run_id = s.run_id
                WHERE NOT EXISTS (SELECT 1 FROM review_reviewitem i WHERE i.sample_id = s.id)
                ON CONFLICT DO NOTHING
                RETURNING run_id, leaf_path, leaf_id
            ), tally AS (
                INSERT INTO review_counter (run_id, leaf_path, leaf_id, pending, approved, rejected, edited)
                SELECT run_id, leaf_path, max(leaf_id), count(*), 0, 0, 0 FROM opened GROUP BY run_id, leaf_path
                ON CONFLICT (run_id, leaf_path) DO UPDATE SET pending = review_counter.pending + EXCLUDED.pending
                RETURNING pending
            )
            SELECT count(*) FROM opened
            """
        )
        return cursor.fetchone()[0]


def counters_rebuild() -> None:
    """Recount every counter from the items (a repair tool: the services keep them in step)."""
    from django.db.models import Count, Max, Q

    with transaction.atomic():
        Counter.objects.all().delete()
        rows = (
            ReviewItem.objects.order_by()
            .values("run_id", "leaf_path")
            .annotate(
                leaf=Max("leaf_id"),
                **{
                    state: Count("pk", filter=Q(state=state)) for state in ("pending", "approved", "rejected", "edited")
                },
            )
        )
        Counter.objects.bulk_create(
            Counter(
                run_id=row["run_id"],
                leaf_path=row["leaf_path"],
                leaf_id=row["leaf"],
                pending=row["pending"],
                approved=row["approved"],
                rejected=row["rejected"],
                edited=row["edited"],
            )
            for row in rows
        )
