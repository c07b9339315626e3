"""Bulk decisions: approve or reject a selection, or all that a queue matches minus some, as a tracked job.

A job is cut into slices of sample ids (`BulkSlice`), worked at once on separate database connections, each in
chunks. A chunk is one transaction: one set-based statement on PostgreSQL (pick the pending rows, update
them, insert their decisions), then the counters, the slice's cursor and the job's progress. So a job that
stops resumes where each slice stood and no chunk is applied twice. Samples that need more than one reviewer
are left to individual votes. Undo takes back every decision of the job still in force, sliced as the job
was, and records each chunk as one sweep (`Decision`): the samples it took back point at it.

A job (and its undo) lives the lifecycle every job shares (labweb.jobs): the worker that runs it holds it under
a lease its process renews, the reaper sends a job whose lease lapsed again (it resumes from its slices) and one
whose message no worker took, and an exception leaves it failed with the error, to be resumed. Cancel stops a job
between chunks: what it decided stays decided (and undoable), and a chunk in flight rolls back whole.
"""

import json
import logging
import threading
from collections import Counter as Tally

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, Q
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from labweb import jobs
from labweb.errors import ConflictError, LabError
from labweb.roles import OPERATOR, has_role
from review.core import rules
from review.models import BulkEvent, BulkJob, BulkSlice, Decision, ReviewItem
from review.queue import Queue
from review.services.counters import counters_move
from review.services.decisions import REASON_CODES

logger = logging.getLogger(__name__)
RUN_TASK = "review.tasks.bulk_run"
UNDO_TASK = "review.tasks.bulk_undo_run"
EVENTS_SHOWN = 20  # of a job's log, on its page and in the API
# Slices a job is cut into, each worked on a database connection of its own: on the 2 cores the app is sized
# for, two statements at once take the job's writing in half the time (bench/RESULTS.md).
WORKERS = 2
MAX_SELECTION = 10_000


class _Stopped(Exception):
    """The job stopped being this chunk's to write (cancelled, or taken over) while the chunk ran: roll it back."""


def chunk_size() -> int:
    """Samples a chunk decides in one transaction (LABWEB_REVIEW_BULK_CHUNK, 50,000)."""
    return settings.LABWEB_REVIEW_BULK_CHUNK


def event(job: BulkJob, message: str, *, level: str = BulkEvent.Level.INFO) -> None:
    BulkEvent.objects.create(job=job, level=level, message=message)


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
        event(job, f"Created by {reviewer}: {action} {count} samples.")
        jobs.send_task_on_commit(RUN_TASK, job.pk)
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
    and taken back only while that decision is still in force. The chunk is recorded as one sweep (see
    `Decision`): the job's decisions it covers are those with ids up to the last one picked, on the slice's
    samples; each item taken back points at it."""
    sql = f"""
        WITH picked AS MATERIALIZED (
            SELECT d.id, d.item_id FROM review_decision d
            WHERE d.id > %s AND d.id <= %s AND d.job_id = %s AND d.action <> 'undo'
                AND d.item_id > %s AND d.item_id <= %s
            ORDER BY d.id LIMIT {int(chunk)}
        ),
        made AS (
            INSERT INTO review_decision (item_id, reviewer_id, action, reason, note, job_id, state_after,
                created_at, undoes_after, undoes_through, samples_after, samples_through)
            SELECT NULL, %s, 'undo', '', '', %s, 'pending', %s, %s, max(id), %s, %s FROM picked HAVING count(*) > 0
            RETURNING id
        ),
        changed AS (
            UPDATE review_reviewitem i
            SET state = 'pending', version = i.version + 1, decided_at = NULL, votes = 0,
                decision_id = (SELECT id FROM made)
            FROM (SELECT id, item_id FROM picked ORDER BY item_id) p
            WHERE i.sample_id = p.item_id AND i.decision_id = p.id
            RETURNING i.run_id, i.leaf_path
        )
        SELECT (SELECT count(*) FROM picked), (SELECT max(id) FROM picked), (SELECT count(*) FROM changed),
            NULL, NULL, (SELECT json_agg(t)::text FROM (
                SELECT run_id, leaf_path, count(*) AS n FROM changed GROUP BY run_id, leaf_path) t)
    """
    params = [part.cursor, job.last_decision or 0, job.pk, part.low, part.high]
    return sql, [*params, job.reviewer_id, job.pk, timezone.now(), part.cursor, part.low, part.high]


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
    decisions = list(
        Decision.objects.filter(job=job, pk__gt=part.cursor, pk__lte=job.last_decision or 0)
        .filter(item_id__gt=part.low, item_id__lte=part.high)
        .exclude(action=rules.UNDO)
        .select_related("item")
        .order_by("pk")[:chunk]
    )
    if not decisions:
        return 0, None, 0, None, None
    sweep = Decision.objects.create(
        reviewer_id=job.reviewer_id,
        action=rules.UNDO,
        job=job,
        state_after=rules.PENDING,
        created_at=timezone.now(),
        undoes_after=part.cursor,
        undoes_through=decisions[-1].pk,
        samples_after=part.low,
        samples_through=part.high,
    )
    moves: Tally = Tally()
    count = 0
    for decision in decisions:
        item = decision.item
        taken = ReviewItem.objects.filter(pk=item.pk, decision=decision).update(
            state=rules.PENDING, version=F("version") + 1, decision=sweep, decided_at=None, votes=0
        )
        if taken:
            moves[(item.run_id, item.leaf_path, item.leaf_id, item.state, rules.PENDING)] += 1
            count += taken
    counters_move(moves)
    return len(decisions), decisions[-1].pk, count, None, None


def bulk_step(job_id: int, *, chunk: int | None = None, owner: str | None = None, wait: bool = False) -> bool:
    """One chunk of a job's work (or of its undo) in one transaction, what a worker does between two commits:
    the next chunk of the first unfinished slice that no other worker holds (with `wait`, the first unfinished
    slice, waiting for whoever holds it). False when none is left to take, or when the job is no longer
    `owner`'s (taken over after its lease lapsed, or stopped)."""
    chunk = chunk or chunk_size()
    try:
        return _step(job_id, chunk=chunk, owner=owner, wait=wait)
    except _Stopped:
        return False


def _step(job_id: int, *, chunk: int, owner: str | None, wait: bool) -> bool:
    with transaction.atomic():
        job = BulkJob.objects.select_related("reviewer").get(pk=job_id)
        if owner is not None and job.lease_owner != owner:
            return False
        if job.status == BulkJob.Status.QUEUED:
            BulkJob.objects.filter(pk=job.pk, status=BulkJob.Status.QUEUED).update(status=BulkJob.Status.RUNNING)
            job.status = BulkJob.Status.RUNNING
        if job.status not in (BulkJob.Status.RUNNING, BulkJob.Status.UNDOING):
            return False
        undo = job.status == BulkJob.Status.UNDOING
        part = (
            BulkSlice.objects.select_for_update(skip_locked=not wait)
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
                # A chunk's commit need not wait for its WAL to reach the disk: a crash loses the chunk and its
                # slice's cursor together, and the job resumes from the cursor; the job is marked done in a
                # transaction of its own, whose flush takes every chunk's WAL before it along.
                cursor.execute("SET LOCAL synchronous_commit = off")
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
        # The chunk's last write, and the one that decides whether it stands: a cancel (or a takeover) that
        # committed first makes it match nothing, and the chunk rolls back whole. One that commits first waits
        # for this (the job's row lock) and counts it: the job's `done` is then exactly what it decided.
        still = BulkJob.objects.filter(pk=job.pk, status=job.status)
        if not (still if owner is None else still.filter(lease_owner=owner)).update(**progress):
            raise _Stopped
    return True


def _unfinished(job_id: int, *, owner: str | None) -> bool:
    """Whether the job is still `owner`'s to work and a slice of what it is doing is unfinished."""
    job = BulkJob.objects.filter(pk=job_id).values("status", "lease_owner").first()
    if job is None or job["status"] not in (BulkJob.Status.RUNNING, BulkJob.Status.UNDOING):
        return False
    if owner is not None and job["lease_owner"] != owner:
        return False
    undo = job["status"] == BulkJob.Status.UNDOING
    return BulkSlice.objects.filter(job_id=job_id, undo=undo, finished=False).exists()


def _work(job_id: int, *, chunk: int, workers: int, owner: str | None = None) -> None:
    """Work the job's slices to their end: on `workers` threads with database connections of their own, or in
    this one where that cannot be (SQLite, or inside a transaction: other connections would not see its rows)."""

    def steps() -> None:
        while bulk_step(job_id, chunk=chunk, owner=owner):
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
    steps()
    # What is left is a slice another connection holds: a dead worker's, whose chunk is still running in the
    # database (it rolls back when that statement ends, its client being gone). Wait for it, then take it.
    while bulk_step(job_id, chunk=chunk, owner=owner, wait=True) or _unfinished(job_id, owner=owner):
        pass


def _take(job_id: int, allowed: tuple[str, ...]) -> str | None:
    """Take the job's lease if no live worker holds it (one conditional UPDATE); the owner token, or None."""
    owner = jobs.lease_owner()
    taken = BulkJob.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now()), pk=job_id, status__in=allowed
    ).update(lease_owner=owner, lease_until=jobs.lease_until(), attempts=F("attempts") + 1)
    return owner if taken else None


def _drive(job_id: int, *, undo: bool, chunk: int | None, workers: int | None) -> BulkJob:
    """Take the job's lease, plan its slices (or its undo's) if it has none, work them, and mark the job done
    (undone) once every slice is finished; safe to call again (a job in another state, or one a live worker
    holds, is left as it is). An exception marks the job failed with the error."""
    working, finished, stamp = (
        (BulkJob.Status.UNDOING, BulkJob.Status.UNDONE, "undone_at")
        if undo
        else (BulkJob.Status.RUNNING, BulkJob.Status.DONE, "finished_at")
    )
    allowed = (working,) if undo else (BulkJob.Status.QUEUED, working)
    owner = _take(job_id, allowed)
    if owner is None:
        return BulkJob.objects.get(pk=job_id)
    try:
        with jobs.lease_kept(BulkJob, job_id, owner):
            with transaction.atomic():
                job = BulkJob.objects.select_for_update().get(pk=job_id)
                if job.status == BulkJob.Status.QUEUED:
                    job.status = working
                    job.save(update_fields=["status"])
                if job.status != working or job.lease_owner != owner:
                    return job
                _plan(job, undo=undo)
            _work(job_id, chunk=chunk or chunk_size(), workers=workers or WORKERS, owner=owner)
            with transaction.atomic():
                job = BulkJob.objects.select_for_update().get(pk=job_id)
                if job.status == working and job.lease_owner == owner and not _unfinished(job_id, owner=owner):
                    job.status, job.lease_owner, job.lease_until = finished, "", None
                    setattr(job, stamp, timezone.now())
                    job.save(update_fields=["status", stamp, "lease_owner", "lease_until"])
                    event(job, f"Undone: {job.undone} decisions taken back." if undo else f"Done: {job.done} decided.")
    except Exception as error:  # noqa: BLE001 - whatever stops a job is recorded on it, never left running
        message = error.message if isinstance(error, LabError) else f"{type(error).__name__}: {error}"
        logger.exception("Bulk job %s failed", job_id)
        fields = {} if undo else {"finished_at": timezone.now()}
        with transaction.atomic():  # the error and its line in the log show together
            failed = BulkJob.objects.filter(pk=job_id, status__in=allowed, lease_owner=owner).update(
                status=BulkJob.Status.FAILED, error=message.strip()[:5000], lease_owner="", lease_until=None, **fields
            )
            if failed:
                job = BulkJob.objects.get(pk=job_id)
                event(job, f"{'Undo failed' if undo else 'Failed'}: {message}", level=BulkEvent.Level.ERROR)
    finally:
        BulkJob.objects.filter(pk=job_id, lease_owner=owner).update(lease_owner="", lease_until=None)
    return BulkJob.objects.get(pk=job_id)


def bulk_run(*, job_id: int, chunk: int | None = None, workers: int | None = None) -> BulkJob:
    """Work the job to its end, slice by slice; safe to call again (a finished job is left as it is)."""
    return _drive(job_id, undo=False, chunk=chunk, workers=workers)


def may_act(job: BulkJob, user, what: str) -> bool:
    """Whether `user` may `what` ("undo", "resume", "cancel") the job: its reviewer; operators may resume and
    cancel it too (the dashboard)."""
    operators = what in ("resume", "cancel")
    return job.reviewer_id == user.pk or user.is_superuser or (operators and has_role(user, OPERATOR))


def _may_act(job: BulkJob, user, what: str) -> None:
    if not may_act(job, user, what):
        raise ConflictError(f"Bulk job {job.pk} is {job.reviewer}'s; only they can {what} it.", field="job")


def _undo_started(job: BulkJob) -> bool:
    return job.slices.filter(undo=True).exists()


def undoable(job: BulkJob) -> bool:
    """Whether the job can be undone now: done, cancelled, or failed before its undo began."""
    return job.status in (BulkJob.Status.DONE, BulkJob.Status.CANCELLED) or (
        job.status == BulkJob.Status.FAILED and not _undo_started(job)
    )


def bulk_undo(*, job: BulkJob, reviewer) -> BulkJob:
    """Queue the undo of a whole job. Only its reviewer may, once the job is done (or failed or was cancelled part
    way: what it decided is taken back)."""
    _may_act(job, reviewer, "undo")
    if job.status in (BulkJob.Status.UNDOING, BulkJob.Status.UNDONE):
        raise ConflictError(f"Bulk job {job.pk} is already {job.status}.", field="job")
    if not undoable(job):
        hint = "resume it, then undo" if job.status == BulkJob.Status.FAILED else "undo it when it is done"
        raise ConflictError(f"Bulk job {job.pk} is still {job.status}; {hint}.", field="job")
    with transaction.atomic():
        updated = BulkJob.objects.filter(pk=job.pk, status=job.status, lease_owner="").update(
            status=BulkJob.Status.UNDOING, error=""
        )
        if not updated:
            raise ConflictError(f"Bulk job {job.pk} changed under you; look at it again.", field="job")
        job.refresh_from_db()
        _plan(job, undo=True)
        event(job, f"Undo of the whole job started by {reviewer}.")
        jobs.job_send_on_commit(job, UNDO_TASK, job.pk)
    return job


def bulk_undo_run(*, job_id: int, chunk: int | None = None, workers: int | None = None) -> BulkJob:
    """Take back the job's decisions still in force, slice by slice; safe to call again."""
    return _drive(job_id, undo=True, chunk=chunk, workers=workers)


def bulk_resume(*, job: BulkJob, user) -> BulkJob:
    """Go on with a failed job (or a failed undo) from where its slices stand: what it decided is kept, and no
    sample is decided twice. Its reviewer may, and operators (the dashboard's retry)."""
    _may_act(job, user, "resume")
    with transaction.atomic():
        job = BulkJob.objects.select_for_update().get(pk=job.pk)
        if job.status != BulkJob.Status.FAILED:
            raise ConflictError(f"Bulk job {job.pk} is {job.status}; only a failed one can be resumed.", field="status")
        undo = _undo_started(job)
        fields = {} if undo else {"finished_at": None}
        BulkJob.objects.filter(pk=job.pk).update(
            status=BulkJob.Status.UNDOING if undo else BulkJob.Status.RUNNING,
            error="",
            lease_owner="",
            lease_until=None,
            **fields,
        )
        event(job, f"{'Undo resumed' if undo else 'Resumed'} by {user}.")
        jobs.job_send_on_commit(job, UNDO_TASK if undo else RUN_TASK, job.pk)
        job.refresh_from_db()
    return job


def bulk_cancel(*, job: BulkJob, user) -> BulkJob:
    """Stop a queued or running job; its reviewer may, and operators (the dashboard). What it decided stays
    decided, and is undone as a done job's is; the rest stays pending. A chunk a worker is in the middle of
    either committed before this (and is counted) or rolls back whole (`_step`), so once this commits the job's
    `done` is exactly what it decided."""
    _may_act(job, user, "cancel")
    with transaction.atomic():
        # The lease goes with it: the worker's next step finds the job no longer its own, and Undo may start.
        cancelled = BulkJob.objects.filter(pk=job.pk, status__in=BulkJob.CANCELLABLE).update(
            status=BulkJob.Status.CANCELLED, finished_at=timezone.now(), lease_owner="", lease_until=None
        )
        job.refresh_from_db()
        if not cancelled:
            raise ConflictError(
                f"Bulk job {job.pk} is {job.status}; only a queued or running one can be cancelled.", field="status"
            )
        event(
            job,
            f"Cancelled by {user}: the {job.done} samples it decided stay decided (undo the job to take them back); "
            f"the other {max(job.expected - job.done, 0)} it left as they were.",
            level=BulkEvent.Level.WARNING,
        )
    return job


def bulk_reap() -> int:
    """Send again the jobs whose worker stopped renewing its lease, and those whose message no worker took (a
    second message finds the job held or finished: `_take` claims); the periodic reaper calls this."""

    return jobs.reap_kind(
        BulkJob.objects.filter(status__in=BulkJob.WORKING),
        warn=lambda job, message: event(job, message, level=BulkEvent.Level.WARNING),
        send=lambda job: jobs.send_task_on_commit(
            UNDO_TASK if job.status == BulkJob.Status.UNDOING else RUN_TASK, job.pk
        ),
        lapsed="Its worker stopped answering; sent again.",
    )
