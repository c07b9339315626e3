"""Bulk decisions: approve or reject a selection, or all that a queue matches minus some, as a tracked job.

A job is cut into slices of sample ids (`BulkSlice`), worked at once on separate database connections, each in
chunks. A chunk is one transaction: one set-based statement on PostgreSQL (pick the pending rows, update
them, insert their decisions), then the counters, the slice's cursor and the job's progress. So a job that
stops resumes where each slice stood and no chunk is applied twice. Samples that need more than one reviewer
are left to individual votes. Undo takes back every decision of the job still in force, sliced by decision id.
"""

import json
import threading
from collections import Counter as Tally

from django.db import connection, transaction
from django.db.models import F, Max, Q
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from labweb.errors import ConflictError, LabError
from review.core import rules
from review.models import BulkJob, BulkSlice, Decision, ReviewItem
from review.queue import Queue
from review.services.counters import counters_move
from review.services.decisions import REASON_CODES

CHUNK = 50_000
# Slices a job is cut into, each worked on a database connection of its own: on the 2 cores the app is sized
# for, two statements at once take the job's writing in half the time (bench/RESULTS.md).
WORKERS = 2
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
    top = ReviewItem.objects.aggregate(top=Max("sample_id"))["top"] or 0
    ceiling = top if ceiling is None else min(ceiling, top)
    items = bulk_items(queue=queue, selected=selected, excluded=excluded, reviewer=reviewer, ceiling=ceiling)
    count, cuts = _census(items)
    if not count:
        raise LabError("No pending sample matches this selection: nothing to decide.", field="filters")
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
        _slices(job, undo=False, bounds=[0, *cuts, ceiling])
        transaction.on_commit(lambda: tasks.bulk_run.delay(job.pk))
    return job


def _tune(cursor) -> None:
    # One chunk is one large statement: JIT compiling it costs a tenth of a second each time, and sorting
    # 50,000 ids spills to disk at the default work_mem. Both settings end with the transaction.
    cursor.execute("SET LOCAL jit = off")
    cursor.execute("SET LOCAL work_mem = '64MB'")


def _items(job: BulkJob):
    queue = Queue.from_params(job.filters)
    return bulk_items(
        queue=queue, selected=job.selected, excluded=job.excluded, reviewer=job.reviewer, ceiling=job.ceiling
    )


def _census(items) -> tuple[int, list[int]]:
    """How many `items` there are, and the sample ids that cut them into WORKERS shares of about equal size
    (one scan of the matching rows, the count the confirmation needs anyway)."""
    fractions = [n / WORKERS for n in range(1, WORKERS)]
    if connection.vendor == "postgresql":
        sql, params = items.order_by().values("sample_id").query.sql_with_params()
        with transaction.atomic(), connection.cursor() as cursor:
            _tune(cursor)
            cursor.execute(
                f"SELECT count(*), percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY m.sample_id) FROM ({sql}) m",
                [fractions, *params],
            )
            count, cuts = cursor.fetchone()
    else:
        ids = list(items.order_by("sample_id").values_list("sample_id", flat=True))
        count, cuts = len(ids), [ids[int(len(ids) * f)] for f in fractions] if ids else []
    return count, [cut for cut in cuts or [] if cut is not None]


def _slices(job: BulkJob, *, undo: bool, bounds: list[int]) -> None:
    """The job's slices (or its undo's) between consecutive `bounds`: keys in (low, high]."""
    bounds = sorted({bound for bound in bounds if bounds[0] <= bound <= bounds[-1]})
    pairs = list(zip(bounds, bounds[1:], strict=False)) or [(bounds[0], bounds[0])]
    BulkSlice.objects.bulk_create(BulkSlice(job=job, undo=undo, low=low, high=high, cursor=low) for low, high in pairs)


def _plan(job: BulkJob, *, undo: bool) -> None:
    """Cut the job (or its undo) into slices once, the caller holding the job's row lock. A job made without
    slices gets WORKERS shares of its samples; its undo gets the job's slices again, so two workers take back
    disjoint ranges of samples (and write to far apart pages of each index) as the job's workers did."""
    if job.slices.filter(undo=undo).exists():
        return
    if not undo:
        _slices(job, undo=False, bounds=[0, *_census(_items(job))[1], job.ceiling])
        return
    shares = list(job.slices.filter(undo=False).order_by("low").values_list("low", "high")) or [(0, job.ceiling)]
    start = (job.first_decision or 1) - 1
    BulkSlice.objects.bulk_create(
        BulkSlice(job=job, undo=True, low=low, high=high, cursor=start) for low, high in shares
    )


def _chunk_sql(job: BulkJob, part: BulkSlice, chunk: int) -> tuple[str, list]:
    """One chunk as one statement. The picked rows are updated by their physical address (a TID scan: no
    second index lookup per row), each taking its decision's id as it changes, and decisions are inserted for
    exactly the rows the UPDATE changed. A row another reviewer decided meanwhile has a new address and is no
    longer pending, so the UPDATE (which re-checks both) leaves it and no decision is made for it."""
    picked_sql, picked_params = (
        _items(job)
        .filter(sample_id__gt=part.cursor, sample_id__lte=part.high)
        .extra(select={"tid": f"{ReviewItem._meta.db_table}.ctid"})
        .order_by("sample_id")
        .values("tid", "sample_id")[:chunk]
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
        )
        {_RESULT.format(key="sample_id")}
    """
    now = timezone.now()
    params = [*picked_params, state, now, job.reviewer_id, job.action, job.reason, job.note, job.pk, state, now]
    return sql, params


# What a chunk's statement answers: rows picked, the last key picked, decisions made and their id range, and
# the moves per counter as JSON.
_RESULT = """
        SELECT (SELECT count(*) FROM picked), (SELECT max({key}) FROM picked), (SELECT count(*) FROM made),
            (SELECT min(id) FROM made), (SELECT max(id) FROM made),
            (SELECT json_agg(t)::text FROM (
                SELECT run_id, leaf_path, count(*) AS n FROM changed GROUP BY run_id, leaf_path) t)
"""


def _undo_chunk_sql(job: BulkJob, part: BulkSlice, chunk: int) -> tuple[str, list]:
    """The undo of a chunk of the job's decisions on the slice's samples, found by decision id (a range of
    the primary key: the job's, from the slice's cursor), each item looked up once by its key, in key order,
    and taken back only while that decision is still in force."""
    sql = f"""
        WITH picked AS MATERIALIZED (
            SELECT d.id, d.item_id FROM review_decision d
            WHERE d.id > %s AND d.id <= %s AND d.job_id = %s AND d.action <> 'undo'
                AND d.item_id > %s AND d.item_id <= %s
            ORDER BY d.id LIMIT {int(chunk)}
        ),
        changed AS (
            UPDATE review_reviewitem i
            SET state = 'pending', version = i.version + 1, decided_at = NULL, votes = 0,
                decision_id = nextval(pg_get_serial_sequence('review_decision', 'id'))
            FROM (SELECT id, item_id FROM picked ORDER BY item_id) p
            WHERE i.sample_id = p.item_id AND i.decision_id = p.id
            RETURNING i.sample_id, i.decision_id, p.id AS undone_id, i.run_id, i.leaf_path
        ),
        made AS (
            INSERT INTO review_decision (id, item_id, reviewer_id, action, reason, note, job_id, undoes_id,
                state_after, created_at)
            SELECT decision_id, sample_id, %s, 'undo', '', '', %s, undone_id, 'pending', %s FROM changed
            RETURNING id
        )
        {_RESULT.format(key="id")}
    """
    params = [part.cursor, job.last_decision or 0, job.pk, part.low, part.high, job.reviewer_id, job.pk]
    return sql, [*params, timezone.now()]


def _counters_sql(cursor, moves: list[dict], before: str, after: str) -> None:
    """Move the counters of a chunk in one statement, locking them in id order (two workers lock the same
    counters, so one order keeps them from deadlocking; the second waits for the first's commit)."""
    if not moves:
        return
    cursor.execute(
        f"""
        WITH moved AS (SELECT * FROM json_to_recordset(%s::json) AS m(run_id bigint, leaf_path text, n integer)),
        locked AS (
            SELECT c.id, m.n FROM review_counter c JOIN moved m ON c.run_id = m.run_id AND c.leaf_path = m.leaf_path
            ORDER BY c.id FOR UPDATE OF c
        )
        UPDATE review_counter c SET {before} = c.{before} - l.n, {after} = c.{after} + l.n
        FROM locked l WHERE c.id = l.id
        """,
        [json.dumps(moves)],
    )


def _chunk_orm(job: BulkJob, part: BulkSlice, chunk: int) -> tuple:
    """The same chunk, row by row, for SQLite (which has no UPDATE … FROM over a data-modifying CTE)."""
    now = timezone.now()
    state = rules.state_after(job.action)
    rows = list(_items(job).filter(sample_id__gt=part.cursor, sample_id__lte=part.high).order_by("sample_id")[:chunk])
    moves: Tally = Tally()
    made = []
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
        made.append(decision.pk)
    counters_move(moves)
    return len(rows), rows[-1].pk if rows else None, len(made), min(made, default=None), max(made, default=None)


def _undo_chunk_orm(job: BulkJob, part: BulkSlice, chunk: int) -> tuple:
    now = timezone.now()
    decisions = list(
        Decision.objects.filter(job=job, pk__gt=part.cursor, pk__lte=job.last_decision or 0)
        .filter(item_id__gt=part.low, item_id__lte=part.high)
        .exclude(action=rules.UNDO)
        .select_related("item")
        .order_by("pk")[:chunk]
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
    return len(decisions), decisions[-1].pk if decisions else None, count, None, None


def bulk_step(job_id: int, *, chunk: int = CHUNK) -> bool:
    """One chunk of a job's work (or of its undo) in one transaction, what a worker does between two commits:
    the next chunk of the first unfinished slice that no other worker holds. False when none is left to take."""
    with transaction.atomic():
        job = BulkJob.objects.select_related("reviewer").get(pk=job_id)
        if job.status == BulkJob.Status.QUEUED:
            BulkJob.objects.filter(pk=job.pk, status=BulkJob.Status.QUEUED).update(status=BulkJob.Status.RUNNING)
            job.status = BulkJob.Status.RUNNING
        if job.status not in (BulkJob.Status.RUNNING, BulkJob.Status.UNDOING):
            return False
        undo = job.status == BulkJob.Status.UNDOING
        part = (
            BulkSlice.objects.select_for_update(skip_locked=True)
            .filter(job=job, undo=undo, finished=False)
            .order_by("low")
            .first()
        )
        if part is None:
            return False
        state = rules.state_after(job.action)
        before, after = (state, rules.PENDING) if undo else (rules.PENDING, state)
        if connection.vendor == "postgresql":
            sql, params = (_undo_chunk_sql if undo else _chunk_sql)(job, part, chunk)
            with connection.cursor() as cursor:
                _tune(cursor)
                if undo:
                    # The chunk's decisions are looked up by key, one item each: PostgreSQL would rather hash
                    # the whole item table (it costs a cached index lookup as a disk read).
                    cursor.execute("SET LOCAL enable_hashjoin = off")
                    cursor.execute("SET LOCAL enable_mergejoin = off")
                cursor.execute(sql, params)
                picked, last, made, first_id, last_id, moves = cursor.fetchone()
                if undo:
                    cursor.execute("SET LOCAL enable_hashjoin = on")
                    cursor.execute("SET LOCAL enable_mergejoin = on")
                _counters_sql(cursor, json.loads(moves or "[]"), before, after)
        else:
            picked, last, made, first_id, last_id = (_undo_chunk_orm if undo else _chunk_orm)(job, part, chunk)
        part.cursor = part.cursor if last is None else last
        part.count += made
        part.finished = picked < chunk
        part.save(update_fields=["cursor", "count", "finished"])
        progress = {"undone": F("undone") + made} if undo else {"done": F("done") + made}
        if first_id is not None:
            progress["first_decision"] = Least(Coalesce(F("first_decision"), first_id), first_id)
            progress["last_decision"] = Greatest(Coalesce(F("last_decision"), last_id), last_id)
        BulkJob.objects.filter(pk=job.pk).update(**progress)
    return True


def _work(job_id: int, *, chunk: int, workers: int) -> None:
    """Work the job's slices to their end: on `workers` threads with database connections of their own, or in
    this one where that cannot be (SQLite, or inside a transaction: other connections would not see its rows)."""

    def steps() -> None:
        while bulk_step(job_id, chunk=chunk):
            pass

    if workers > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                steps()
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=worker, name=f"bulk-{job_id}-{n}") for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
    steps()  # what a worker found locked and left, if anything


def _drive(job_id: int, *, undo: bool, chunk: int, workers: int | None) -> BulkJob:
    """Plan the job's slices (or its undo's) if it has none, work them, and mark the job done (undone) once
    every slice is finished; safe to call again (a job in another state is left as it is)."""
    working, finished, stamp = (
        (BulkJob.Status.UNDOING, BulkJob.Status.UNDONE, "undone_at")
        if undo
        else (BulkJob.Status.RUNNING, BulkJob.Status.DONE, "finished_at")
    )
    with transaction.atomic():
        job = BulkJob.objects.select_for_update().get(pk=job_id)
        if not undo and job.status == BulkJob.Status.QUEUED:
            job.status = working
            job.save(update_fields=["status"])
        if job.status != working:
            return job
        _plan(job, undo=undo)
    _work(job_id, chunk=chunk, workers=workers or WORKERS)
    with transaction.atomic():
        job = BulkJob.objects.select_for_update().get(pk=job_id)
        if job.status == working and not job.slices.filter(undo=undo, finished=False).exists():
            job.status = finished
            setattr(job, stamp, timezone.now())
            job.save(update_fields=["status", stamp])
    return job


def bulk_run(*, job_id: int, chunk: int = CHUNK, workers: int | None = None) -> BulkJob:
    """Work the job to its end, slice by slice; safe to call again (a finished job is left as it is)."""
    return _drive(job_id, undo=False, chunk=chunk, workers=workers)


def bulk_undo(*, job: BulkJob, reviewer) -> BulkJob:
    """Queue the undo of a whole job. Only its reviewer may, and only once the job is done."""
    from review import tasks

    if job.reviewer_id != reviewer.pk and not reviewer.is_superuser:
        raise ConflictError(f"Bulk job {job.pk} is {job.reviewer}'s; only they can undo it.", field="job")
    if job.status in (BulkJob.Status.UNDOING, BulkJob.Status.UNDONE):
        raise ConflictError(f"Bulk job {job.pk} is already {job.status}.", field="job")
    if job.status != BulkJob.Status.DONE:
        raise ConflictError(f"Bulk job {job.pk} is still {job.status}; undo it when it is done.", field="job")
    with transaction.atomic():
        updated = BulkJob.objects.filter(pk=job.pk, status=BulkJob.Status.DONE).update(status=BulkJob.Status.UNDOING)
        if not updated:
            raise ConflictError(f"Bulk job {job.pk} changed under you; look at it again.", field="job")
        job.refresh_from_db()
        _plan(job, undo=True)
        transaction.on_commit(lambda: tasks.bulk_undo_run.delay(job.pk))
    return job


def bulk_undo_run(*, job_id: int, chunk: int = CHUNK, workers: int | None = None) -> BulkJob:
    """Take back the job's decisions still in force, slice by slice; safe to call again."""
    return _drive(job_id, undo=True, chunk=chunk, workers=workers)
