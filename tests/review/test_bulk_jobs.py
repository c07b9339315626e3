"""Bulk jobs under real Celery workers: one killed (SIGKILL) mid-job is taken over by another from the slices'
cursors, one whose chunk raises is shown failed with its error and resumed to its end, one whose message the
broker lost is sent again by the reaper, each sample decided once; and one cancelled mid-chunk keeps exactly the
chunks committed before, which its undo takes back. A trigger the test puts on the item table stands in for what
stops a worker: it makes chosen rows wait on an advisory lock the test holds (the worker is caught mid-chunk), or
raise."""

from collections import Counter

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from review.models import BulkJob, Decision, ReviewItem
from tests.support.review import assert_consistent, taken_back
from tests.support.worker import Worker, drop_queued, reaped, reaper_rounds, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)
GATE = 4242  # the advisory lock gated rows wait on
CHUNK = "5"  # samples a chunk: each slice of 30 takes several


@pytest.fixture
def trigger():
    """`trigger(body)`: a BEFORE UPDATE trigger on review items running `body` (PL/pgSQL), dropped after the
    test (a transactional test truncates tables, not triggers)."""

    def put(body: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE OR REPLACE FUNCTION test_bulk_trigger() RETURNS trigger AS $$ BEGIN {body} RETURN NEW; END "
                "$$ LANGUAGE plpgsql"
            )
            cursor.execute("DROP TRIGGER IF EXISTS test_bulk_trigger ON review_reviewitem")
            cursor.execute(
                "CREATE TRIGGER test_bulk_trigger BEFORE UPDATE ON review_reviewitem FOR EACH ROW "
                "EXECUTE FUNCTION test_bulk_trigger()"
            )

    def drop() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS test_bulk_trigger ON review_reviewitem")
            cursor.execute("DROP FUNCTION IF EXISTS test_bulk_trigger()")

    put.drop = drop
    yield put
    drop()


@pytest.fixture
def api_reviewer(reviewer) -> APIClient:
    client = APIClient()
    client.force_authenticate(reviewer)
    return client


def start_bulk(api: APIClient) -> BulkJob:
    preview = api.post("/api/review/bulk/preview/", {"action": "approve", "filters": {}}, format="json").json()
    started = api.post(
        "/api/review/bulk/", {"action": "approve", "filters": {}, "expected": preview["count"]}, format="json"
    )
    assert started.status_code == 202, started.json()
    return BulkJob.objects.get(pk=started.json()["id"])


def describe(job: BulkJob, worker: Worker) -> str:
    job.refresh_from_db()
    slices = job.slices.order_by("undo", "low").values_list("undo", "low", "high", "cursor", "count", "finished")
    events = job.events.order_by("id").values_list("level", "message")
    return "\n".join(
        [f"job {job.status} done={job.done} undone={job.undone} lease={job.lease_owner} {job.error}"]
        + [str(s) for s in slices]
        + [str(e) for e in events]
        + ["--- worker log tail ---", worker.tail(30)]
    )


def status_is(job: BulkJob, *statuses: str):
    def check():
        job.refresh_from_db()
        return job.status in statuses

    return check


def assert_each_decided_once(job: BulkJob, total: int) -> None:
    decided = Counter(Decision.objects.filter(job=job).exclude(action="undo").values_list("item_id", flat=True))
    assert len(decided) == total and set(decided.values()) == {1}
    assert ReviewItem.objects.filter(state="approved", decision__job=job).count() == total
    assert job.slices.filter(undo=False, finished=True).count() == job.slices.filter(undo=False).count()
    assert sum(job.slices.filter(undo=False).values_list("count", flat=True)) == total
    assert_consistent()


def test_a_bulk_whose_worker_is_killed_is_taken_over_and_decides_each_sample_once(
    make_samples, api_reviewer, operator, queued, settings, trigger, tmp_path
):
    make_samples(4)  # 60 samples, two slices of 30
    ids = list(ReviewItem.objects.order_by("pk").values_list("pk", flat=True))
    # A row in the middle of each slice waits for the lock the test holds: both of the worker's connections stop
    # mid-chunk, two chunks of each slice committed.
    trigger(
        f"IF NEW.sample_id IN ({ids[12]}, {ids[42]}) THEN PERFORM pg_advisory_lock_shared({GATE}); "
        f"PERFORM pg_advisory_unlock_shared({GATE}); END IF;"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [GATE])
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        LABWEB_WORK_LEASE_SECONDS="4",
        LABWEB_REAP_SECONDS="1",
        LABWEB_REVIEW_BULK_CHUNK=CHUNK,
        PYTHONUNBUFFERED="1",
    )
    workers: list[Worker] = []
    try:
        doomed = Worker("doomed", tmp_path / "worker-1.log", env, queues="default", concurrency=2)
        workers.append(doomed)
        doomed.wait_ready()
        job = start_bulk(api_reviewer)

        def stuck():
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                waiting = cursor.fetchone()[0]
            job.refresh_from_db()
            return waiting == 2 and job.done == 20

        wait_for(stuck, timeout=60, what="both slices to stop mid-chunk", describe=lambda: describe(job, doomed))
        held_by = job.lease_owner
        assert job.status == "running" and held_by
        operations = Client()
        operations.force_login(operator)
        dashboard = operations.get("/operations/").content.decode()
        assert f'data-job="bulk-{job.pk}"' in dashboard and "20 of 60 samples decided" in dashboard

        # The second worker runs the periodic reaper; while the first lives, its process keeps the lease.
        second = Worker("fresh", tmp_path / "worker-2.log", env, queues="default", concurrency=2, beat=True)
        workers.append(second)
        second.wait_ready()
        wait_for(reaped(second), timeout=20, what="the reaper to run", worker=second)
        job.refresh_from_db()
        assert (job.status, job.attempts, job.lease_owner, job.done) == ("running", 1, held_by, 20)
        doomed.kill()

        def taken_over():
            job.refresh_from_db()
            return job.attempts >= 2 and job.lease_owner not in ("", held_by)

        # The lease (4 s here) lapses, the reaper (every second here) sends the job again, the second worker
        # takes it: within about 15 s with the default lease of 10 s and reaper period of 5 s.
        wait_for(
            taken_over, timeout=20, what="the second worker to take the job", describe=lambda: describe(job, second)
        )
        assert job.status == "running" and job.done == 20
        # The dead worker's two chunks are still in the database, waiting on the gate; let them end (they roll
        # back, their client gone) and the second worker goes on from each slice's cursor.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [GATE])
        wait_for(
            status_is(job, "done", "failed"), timeout=60, what="the job to end", describe=lambda: describe(job, second)
        )
    finally:
        for worker in workers:
            worker.kill()

    assert (job.status, job.done, job.expected, job.error) == ("done", 60, 60, "")
    assert_each_decided_once(job, 60)
    assert ReviewItem.objects.filter(state="approved").count() == 60
    assert job.events.filter(level="warning", message__contains="stopped answering").exists()
    assert not job.lease_owner


def test_a_bulk_whose_chunk_raises_is_shown_failed_and_resumes_to_its_end(
    make_samples, api_reviewer, reviewer, operator, queued, settings, trigger, tmp_path
):
    make_samples(4)
    ids = list(ReviewItem.objects.order_by("pk").values_list("pk", flat=True))
    held = ids[12]
    trigger(f"IF NEW.sample_id = {held} THEN RAISE EXCEPTION 'sample % is held for audit', NEW.sample_id; END IF;")
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        LABWEB_REVIEW_BULK_CHUNK=CHUNK,
        PYTHONUNBUFFERED="1",
    )
    worker = Worker("bulk", tmp_path / "worker.log", env, queues="default", concurrency=2)
    try:
        worker.wait_ready()
        job = start_bulk(api_reviewer)
        wait_for(
            status_is(job, "done", "failed"), timeout=60, what="the job to stop", describe=lambda: describe(job, worker)
        )
        # The chunks committed before the row that raised are kept (two of its slice, some of the other's).
        assert job.status == "failed" and 10 <= job.done < 60, describe(job, worker)
        assert ReviewItem.objects.get(pk=held).state == "pending"
        message = f"sample {held} is held for audit"
        assert message in job.error and not job.lease_owner

        shown = api_reviewer.get(f"/api/review/bulk/{job.pk}/").json()
        assert shown["status"] == "failed" and message in shown["error"]
        assert any(e["level"] == "error" and message in e["message"] for e in shown["events"])
        page = Client()
        page.force_login(reviewer)
        html = page.get(f"/review/bulk/{job.pk}/").content.decode()
        assert 'data-status="failed"' in html and message in html and 'id="bulk-resume"' in html
        operations = Client()
        operations.force_login(operator)
        dashboard = operations.get("/operations/").content.decode()
        assert f'data-failure="bulk-{job.pk}"' in dashboard and message in dashboard

        # Resumed from the page once the cause is gone: it goes on from the slices' cursors.
        trigger.drop()
        resumed = page.post(f"/review/bulk/{job.pk}/resume/")
        assert resumed.status_code == 302
        wait_for(
            status_is(job, "done", "failed"), timeout=60, what="the job to end", describe=lambda: describe(job, worker)
        )
        assert (job.status, job.done, job.error) == ("done", 60, "")
        assert_each_decided_once(job, 60)
        refused = api_reviewer.post(f"/api/review/bulk/{job.pk}/resume/")
        assert refused.status_code == 409 and "only a failed one" in refused.json()["error"]["message"]

        # Its undo fails the same way, and is resumed through the API to its end.
        trigger(f"IF NEW.sample_id = {held} AND NEW.state = 'pending' THEN RAISE EXCEPTION 'not now'; END IF;")
        assert api_reviewer.post(f"/api/review/bulk/{job.pk}/undo/").status_code == 202
        wait_for(
            status_is(job, "undone", "failed"),
            timeout=60,
            what="the undo to stop",
            describe=lambda: describe(job, worker),
        )
        assert job.status == "failed" and "not now" in job.error and 0 < job.undone < 60
        html = page.get(f"/review/bulk/{job.pk}/").content.decode()
        assert "Its undo failed" in html and "Resume the undo" in html and 'id="bulk-undo"' not in html
        trigger.drop()
        again = api_reviewer.post(f"/api/review/bulk/{job.pk}/resume/")
        assert again.status_code == 202 and again.json()["status"] in ("undoing", "undone")
        wait_for(
            status_is(job, "undone", "failed"),
            timeout=60,
            what="the undo to end",
            describe=lambda: describe(job, worker),
        )
    finally:
        worker.kill()

    assert (job.status, job.undone, job.error) == ("undone", 60, "")
    undone = taken_back(job)
    assert len(undone) == 60 and set(undone.values()) == {1}
    assert ReviewItem.objects.filter(state="pending").count() == 60
    assert_consistent()


def gate_mid_slices(trigger, ids: list[int]) -> None:
    """A row in the middle of each slice (of 30) waits for the lock the test then holds."""
    trigger(
        f"IF NEW.sample_id IN ({ids[12]}, {ids[42]}) THEN PERFORM pg_advisory_lock_shared({GATE}); "
        f"PERFORM pg_advisory_unlock_shared({GATE}); END IF;"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [GATE])


def both_stuck(job: BulkJob, done: int):
    def check():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            waiting = cursor.fetchone()[0]
        job.refresh_from_db()
        return waiting == 2 and job.done == done

    return check


def test_a_bulk_whose_message_was_lost_is_sent_again_and_decides_each_sample_once(
    make_samples, api_reviewer, queued, broker, settings, tmp_path
):
    make_samples(4)
    job = start_bulk(api_reviewer)
    assert drop_queued(broker, "default") == 1  # the job's message, gone with the broker's memory
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        LABWEB_REAP_SECONDS="1",
        LABWEB_QUEUED_RESEND_SECONDS="2",
        LABWEB_REVIEW_BULK_CHUNK=CHUNK,
        PYTHONUNBUFFERED="1",
    )
    worker = Worker("heir", tmp_path / "worker.log", env, queues="default", concurrency=2, beat=True)
    try:
        worker.wait_ready()
        wait_for(
            status_is(job, "done", "failed"), timeout=60, what="the job to end", describe=lambda: describe(job, worker)
        )
        rounds = reaper_rounds(worker)
        wait_for(reaped(worker, rounds + 3), timeout=30, what="three more reaper rounds", worker=worker)
    finally:
        worker.kill()
    job.refresh_from_db()
    assert (job.status, job.done, job.attempts, job.resends, job.error) == ("done", 60, 1, 1, "")
    assert_each_decided_once(job, 60)
    resent = job.events.filter(level="warning", message__startswith="No worker took it in the ")
    assert resent.count() == 1 and "sent again (1 time)" in resent.get().message
    assert job.events.count() == 3  # created, sent again, done


def test_a_bulk_cancelled_mid_chunk_keeps_what_it_decided_and_its_undo_takes_exactly_that_back(
    make_samples, api_reviewer, reviewer, queued, settings, trigger, tmp_path
):
    make_samples(4)  # 60 samples, two slices of 30, chunks of 5
    ids = list(ReviewItem.objects.order_by("pk").values_list("pk", flat=True))
    gate_mid_slices(trigger, ids)
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        LABWEB_REVIEW_BULK_CHUNK=CHUNK,
        PYTHONUNBUFFERED="1",
    )
    worker = Worker("bulk", tmp_path / "worker.log", env, queues="default", concurrency=2)
    try:
        worker.wait_ready()
        job = start_bulk(api_reviewer)
        # Both of the worker's connections are in the middle of their slice's third chunk, two of each committed.
        wait_for(both_stuck(job, 20), timeout=60, what="both slices mid-chunk", describe=lambda: describe(job, worker))
        cancelled = api_reviewer.post(f"/api/review/bulk/{job.pk}/cancel/")
        assert cancelled.status_code == 200, cancelled.json()
        body = cancelled.json()
        assert (body["status"], body["done"]) == ("cancelled", 20)
        assert "Cancelled by rene: the 20 samples it decided stay decided" in body["events"][0]["message"]
        # The chunks in flight end: their last write finds the job cancelled, and they roll back whole.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [GATE])
        wait_for(
            lambda: any(
                "review.tasks.bulk_run[" in line and "succeeded" in line and "'cancelled'" in line
                for line in worker.log.read_text().splitlines()
            ),
            timeout=30,
            what="the worker to leave the job",
            worker=worker,
        )
        job.refresh_from_db()
        assert (job.status, job.done, job.lease_owner) == ("cancelled", 20, "")
        decided = set(Decision.objects.filter(job=job).values_list("item_id", flat=True))
        approved = set(ReviewItem.objects.filter(state="approved").values_list("pk", flat=True))
        untouched = set(ReviewItem.objects.filter(state="pending", decision__isnull=True).values_list("pk", flat=True))
        assert decided == approved and len(decided) == 20 and len(decided) + len(untouched) == 60
        assert {ids[12], ids[42]} <= untouched  # the rows of the chunks that rolled back
        assert sum(job.slices.filter(undo=False).values_list("count", flat=True)) == 20
        assert_consistent()
        again = api_reviewer.post(f"/api/review/bulk/{job.pk}/cancel/")
        assert again.status_code == 409 and "only a queued or running one" in again.json()["error"]["message"]

        trigger.drop()
        undo = api_reviewer.post(f"/api/review/bulk/{job.pk}/undo/")
        assert undo.status_code == 202, undo.json()
        wait_for(
            status_is(job, "undone", "failed"), timeout=60, what="the undo", describe=lambda: describe(job, worker)
        )
    finally:
        worker.kill()
    assert (job.status, job.undone, job.error) == ("undone", 20, "")
    undone = taken_back(job)
    assert set(undone) == decided and set(undone.values()) == {1}
    assert ReviewItem.objects.filter(state="pending").count() == 60
    assert_consistent()
