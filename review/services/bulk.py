"""Bulk decisions: approve or reject a selection, or all that a queue matches minus some, as a tracked job.

A job works in chunks of sample ids. Each chunk is one set-based statement on PostgreSQL (pick the pending
rows, insert their decisions, update the items, move the counters) and records the job's cursor in the same
transaction, so a job that stops resumes where it stood and a chunk is never applied twice. Samples that need
more than one reviewer are left to individual votes. Undo takes back every decision of the job still in force.
"""

from collections import Counter as Tally

from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from labweb.errors import ConflictError, LabError
from review.core import rules
from review.models import BulkJob, Decision, ReviewItem
from review.queue import Queue
from review.services.counters import counters_move
from review.services.decisions import REASON_CODES

CHUNK = 100_000
MAX_SELECTION = 10_000


def bulk_items(*, queue: Queue, selected: list[int], excluded: list[int], reviewer, ceiling: int | None = None):
    """The items a bulk decision would act on now (pending, one reviewer, not claimed by someone else)."""
    items = queue.queryset(reviewer=reviewer).filter(state=rules.PENDING, required=1)
    if selected:
        items = items.filter(sample_id__in=selected)
    if excluded:
        items = items.exclude(sample_id__in=excluded)
    if ceiling is not None:
        items = items.filter(sample_id__lte=ceiling)
    now = timezone.now()
    return items.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now) | Q(claimed_by=reviewer))


def _ids(values, name: str) -> list[int]:
    try:
        ids = sorted({int(v) for v in values or []})
    except (TypeError, ValueError):
        raise LabError(f"{name} must be a list of sample ids.", field=name) from None
    if len(ids) > MAX_SELECTION:
        raise LabError(f"{name} holds more than {MAX_SELECTION} ids; use a filter instead.", field=name)
    return ids


def bulk_preview(*, queue: Queue, selected, excluded, reviewer) -> tuple[int, int]:
    """(how many a bulk decision would take now, the newest sample id it may touch) for the confirmation."""
    selected, excluded = _ids(selected, "selected"), _ids(excluded, "excluded")
    items = bulk_items(queue=queue, selected=selected, excluded=excluded, reviewer=reviewer)
    count = items.count()
    if not count:
        raise LabError("No pending sample matches this selection: nothing to decide.", field="filters")
    ceiling = ReviewItem.objects.aggregate(top=Max("sample_id"))["top"] or 0
    return count, ceiling


def bulk_create(
    *,
    reviewer,
    action: str,
    queue: Queue,
    selected=(),
    excluded=(),
    expected: int,
    ceiling: int | None = None,
    reason: str = "",
    note: str = "",
) -> BulkJob:
    """Record a bulk job after its confirmation and queue it. `expected` is the count the reviewer confirmed;
    a different count now means the queue moved under them (409: confirm again)."""
    from review import tasks

    if action not in (rules.APPROVE, rules.REJECT):
        raise LabError(f"A bulk decision approves or rejects, not {action!r}.", field="action")
    if reason and (action != rules.REJECT or reason not in REASON_CODES):
        raise LabError(f"Unknown reason {reason!r} for a bulk {action}.", field="reason")
    selected, excluded = _ids(selected, "selected"), _ids(excluded, "excluded")
    count, top = bulk_preview(queue=queue, selected=selected, excluded=excluded, reviewer=reviewer)
    ceiling = top if ceiling is None else min(ceiling, top)
    if ceiling != top:
        count = bulk_items(
            queue=queue, selected=selected, excluded=excluded, reviewer=reviewer, ceiling=ceiling
        ).count()
    if count != expected:
        raise ConflictError(
            f"The selection now holds {count} pending samples, not the {expected} you confirmed: confirm again.",
            field="expected",
        )
    with transaction.atomic():
        job = BulkJob.objects.create(
            reviewer=reviewer,
            action=action,
            reason=reason,
            note=(note or "")[:2000],
            filters=queue.as_params(),
            selected=selected,
            excluded=excluded,
            ceiling=ceiling,
            expected=count,
        )
        transaction.on_commit(lambda: tasks.bulk_run.delay(job.pk))
    return job


def _tune(cursor) -> None:
    # One chunk is one large statement: JIT compiling it costs a tenth of a second each time, and sorting
    # 50,000 ids spills to disk at the default work_mem. Both settings end with the transaction.
    cursor.execute("SET LOCAL jit = off")
    cursor.execute("SET LOCAL work_mem = '64MB'")


def _chunk_sql(job: BulkJob, items) -> tuple[str, list]:
    """One chunk as one statement. The picked rows are updated by their physical address (a TID scan: no
    second index lookup per row), each taking its decision's id as it changes, and decisions are inserted for
    exactly the rows the UPDATE changed. A row another reviewer decided meanwhile has a new address and is no
    longer pending, so the UPDATE (which re-checks both) leaves it and no decision is made for it."""
    picked_sql, picked_params = (
        items.filter(sample_id__gt=job.cursor)
        .extra(select={"tid": f"{ReviewItem._meta.db_table}.ctid"})
        .order_by("sample_id")
        .values("tid", "sample_id")[:CHUNK]
        .query.sql_with_params()
    )
    state = rules.state_after(job.action)
    sql = f"""
        WITH picked AS MATERIALIZED (SELECT p.tid, p.sample_id FROM ({picked_sql}) p),
        changed AS (
            UPDATE review_reviewitem i
            SET state = %s, version = i.version + 1, decided_at = %s, votes = 1,
                decision_id = nextval(pg_get_serial_sequence('review_decision', 'id')),
                claimed_by_id = NULL, claimed_until = NULL
            WHERE i.ctid = ANY(ARRAY(SELECT tid FROM picked)) AND i.state = 'pending'
            RETURNING i.sample_id, i.decision_id, i.run_id, i.leaf_path
        ),
        made AS (
            INSERT INTO review_decision (id, item_id, reviewer_id, action, reason, note, job_id, state_after,
                created_at)
            SELECT decision_id, sample_id, %s, %s, %s, %s, %s, %s, %s FROM changed
            RETURNING id
        ),
        tally AS (
            UPDATE review_counter c SET pending = c.pending - t.n, {state} = c.{state} + t.n
            FROM (SELECT run_id, leaf_path, count(*) AS n FROM changed GROUP BY run_id, leaf_path) t
            WHERE c.run_id = t.run_id AND c.leaf_path = t.leaf_path
            RETURNING c.id
        )
        SELECT (SELECT count(*) FROM made), (SELECT max(sample_id) FROM picked), (SELECT count(*) FROM tally)
    """
    now = timezone.now()
    params = [*picked_params, state, now, job.reviewer_id, job.action, job.reason, job.note, job.pk, state, now]
    return sql, params


def _chunk_orm(job: BulkJob, items) -> tuple[int, int | None]:
    """The same chunk, row by row, for SQLite (which has no UPDATE … FROM over a data-modifying CTE)."""
    now = timezone.now()
    state = rules.state_after(job.action)
    rows = list(items.filter(sample_id__gt=job.cursor).order_by("sample_id")[:CHUNK])
    moves: Tally = Tally()
    for item in rows:
        decision = Decision.objects.create(
            item=item,
            reviewer_id=job.reviewer_id,
            action=job.action,
            reason=job.reason,
            note=job.note,
            job=job,
            state_after=state,
            created_at=now,
        )
        ReviewItem.objects.filter(pk=item.pk, state=rules.PENDING).update(
            state=state,
            version=item.version + 1,
            decision=decision,
            decided_at=now,
            votes=1,
            claimed_by=None,
            claimed_until=None,
        )
        moves[(item.run_id, item.leaf_path, item.leaf_id, rules.PENDING, state)] += 1
    counters_move(moves)
    return len(rows), rows[-1].pk if rows else None


def bulk_run(*, job_id: int) -> BulkJob:
    """Work the job to its end, chunk by chunk; safe to call again (a finished job is left as it is)."""
    job = BulkJob.objects.get(pk=job_id)
    if job.status not in (BulkJob.Status.QUEUED, BulkJob.Status.RUNNING):
        return job
    BulkJob.objects.filter(pk=job.pk, status=BulkJob.Status.QUEUED).update(status=BulkJob.Status.RUNNING)
    queue = Queue.from_params(job.filters)
    while True:
        with transaction.atomic():
            job = BulkJob.objects.select_for_update().get(pk=job_id)
            if job.status != BulkJob.Status.RUNNING:
                return job
            items = bulk_items(
                queue=queue, selected=job.selected, excluded=job.excluded, reviewer=job.reviewer, ceiling=job.ceiling
            )
            if connection.vendor == "postgresql":
                sql, params = _chunk_sql(job, items)
                with connection.cursor() as cursor:
                    _tune(cursor)
                    cursor.execute(sql, params)
                    count, last, _ = cursor.fetchone()
            else:
                count, last = _chunk_orm(job, items)
            if last is None:
                job.status = BulkJob.Status.DONE
                job.finished_at = timezone.now()
                job.save(update_fields=["status", "finished_at"])
                return job
            job.done += count
            job.cursor = last
            job.save(update_fields=["done", "cursor"])


def bulk_undo(*, job: BulkJob, reviewer) -> BulkJob:
    """Queue the undo of a whole job. Only its reviewer may, and only once the job is done."""
    from review import tasks

    if job.reviewer_id != reviewer.pk and not reviewer.is_superuser:
        raise ConflictError(f"Bulk job {job.pk} is {job.reviewer}'s; only they can undo it.", field="job")
    if job.status in (BulkJob.Status.UNDOING, BulkJob.Status.UNDONE):
        raise ConflictError(f"Bulk job {job.pk} is already {job.status}.", field="job")
    if job.status != BulkJob.Status.DONE:
        raise ConflictError(f"Bulk job {job.pk} is still {job.status}; undo it when it is done.", field="job")
    updated = BulkJob.objects.filter(pk=job.pk, status=BulkJob.Status.DONE).update(
        status=BulkJob.Status.UNDOING, cursor=0
    )
    if not updated:
        raise ConflictError(f"Bulk job {job.pk} changed under you; look at it again.", field="job")
    transaction.on_commit(lambda: tasks.bulk_undo_run.delay(job.pk))
    job.refresh_from_db()
    return job


def _undo_chunk_sql(job: BulkJob) -> tuple[str, list]:
    """The undo of a chunk of the job's decisions still in force, built as `_chunk_sql` is."""
    now = timezone.now()
    state = rules.state_after(job.action)
    sql = f"""
        WITH picked AS (
            SELECT d.id AS undone_id, d.item_id, nextval(pg_get_serial_sequence('review_decision', 'id')) AS undo_id
            FROM (
                SELECT d.id, d.item_id FROM review_decision d
                JOIN review_reviewitem i ON i.sample_id = d.item_id AND i.decision_id = d.id
                WHERE d.job_id = %s AND d.item_id > %s AND d.action <> 'undo'
                ORDER BY d.item_id LIMIT {CHUNK}
            ) d
        ),
        changed AS (
            UPDATE review_reviewitem i
            SET state = 'pending', version = i.version + 1, decision_id = picked.undo_id, decided_at = NULL, votes = 0
            FROM picked WHERE i.sample_id = picked.item_id AND i.decision_id = picked.undone_id
            RETURNING i.sample_id, i.run_id, i.leaf_path, picked.undo_id, picked.undone_id
        ),
        made AS (
            INSERT INTO review_decision (id, item_id, reviewer_id, action, reason, note, job_id, undoes_id,
                state_after, created_at)
            SELECT undo_id, sample_id, %s, 'undo', '', '', %s, undone_id, 'pending', %s FROM changed
            RETURNING id
        ),
        tally AS (
            UPDATE review_counter c SET pending = c.pending + t.n, {state} = c.{state} - t.n
            FROM (SELECT run_id, leaf_path, count(*) AS n FROM changed GROUP BY run_id, leaf_path) t
            WHERE c.run_id = t.run_id AND c.leaf_path = t.leaf_path
            RETURNING c.id
        )
        SELECT (SELECT count(*) FROM made), (SELECT max(item_id) FROM picked), (SELECT count(*) FROM tally)
    """
    return sql, [job.pk, job.cursor, job.reviewer_id, job.pk, now]


def _undo_chunk_orm(job: BulkJob) -> tuple[int, int | None]:
    now = timezone.now()
    decisions = list(
        Decision.objects.filter(job=job, item_id__gt=job.cursor)
        .exclude(action=rules.UNDO)
        .select_related("item")
        .order_by("item_id")[:CHUNK]
    )
    moves: Tally = Tally()
    count = 0
    for decision in decisions:
        item = decision.item
        if item.decision_id != decision.pk:
            continue
        undo = Decision.objects.create(
            item=item,
            reviewer_id=job.reviewer_id,
            action=rules.UNDO,
            job=job,
            undoes=decision,
            state_after=rules.PENDING,
            created_at=now,
        )
        ReviewItem.objects.filter(pk=item.pk, decision=decision).update(
            state=rules.PENDING, version=item.version + 1, decision=undo, decided_at=None, votes=0
        )
        moves[(item.run_id, item.leaf_path, item.leaf_id, item.state, rules.PENDING)] += 1
        count += 1
    counters_move(moves)
    return count, decisions[-1].item_id if decisions else None


def bulk_undo_run(*, job_id: int) -> BulkJob:
    """Take back the job's decisions still in force, chunk by chunk; safe to call again."""
    while True:
        with transaction.atomic():
            job = BulkJob.objects.select_for_update().get(pk=job_id)
            if job.status != BulkJob.Status.UNDOING:
                return job
            if connection.vendor == "postgresql":
                sql, params = _undo_chunk_sql(job)
                with connection.cursor() as cursor:
                    _tune(cursor)
                    cursor.execute(sql, params)
                    count, last, _ = cursor.fetchone()
            else:
                count, last = _undo_chunk_orm(job)
            if last is None:
                job.status = BulkJob.Status.UNDONE
                job.undone_at = timezone.now()
                job.save(update_fields=["status", "undone_at"])
                return job
            job.undone += count
            job.cursor = last
            job.save(update_fields=["undone", "cursor"])
