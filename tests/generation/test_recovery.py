"""Recovery and failures through real Celery workers and the scripted teacher: a killed worker's items taken
over from their leases, a slow live one left alone, a teacher out of reach pausing the run until it is back,
and items that keep failing given up after their retries, then retried on demand."""

import json
import socket
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from generation.models import GenerationRun, RunEvent, Sample, TeacherResponse, WorkItem
from generation.services.items import item_claim
from generation.services.runs import run_create, run_resume
from labweb import jobs
from tests.support.sdg import ARITHMETIC, HAIKU
from tests.support.worker import Worker, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

State = WorkItem.State
Status = GenerationRun.Status
LEASE = 2  # seconds: renewed every half second by the worker's lease keeper


def describe(run: GenerationRun, *workers: Worker) -> str:
    run.refresh_from_db()
    items = run.items.order_by("pk").values_list("pk", "state", "attempts", "failures", "lease_owner", "kept")
    events = run.events.order_by("pk").values_list("level", "message")
    return "\n".join(
        [f"run {run.status} {run.error}", *map(str, items), *map(str, events)]
        + [f"--- {worker.log.name} ---\n{worker.tail(15)}" for worker in workers]
    )


def finished(run: GenerationRun, *statuses: str):
    def check():
        run.refresh_from_db()
        return run.status in statuses

    return check


def owner_of(worker: Worker) -> str:
    """How a worker process signs the leases it holds (labweb.jobs.worker_name)."""
    return f"{socket.gethostname()}:{worker.pid}/"


def request_key(body: dict) -> str:
    return json.dumps([body.get("model"), body.get("messages"), body.get("seed")], sort_keys=True)


def env_for(settings, **extra) -> dict:
    options = {
        "LABWEB_WORK_LEASE_SECONDS": str(LEASE),
        "LABWEB_REAP_SECONDS": "0.5",
        "LABWEB_TEACHER_ATTEMPTS": "2",
        "LABWEB_TEACHER_RETRY_DELAY": "0.05",
        "PYTHONUNBUFFERED": "1",
    }
    return worker_env(connection.settings_dict["NAME"], settings.CELERY_BROKER_URL, **(options | extra))


def haiku_and_arithmetic(teacher, user, demo, *, samples_per_leaf: int) -> GenerationRun:
    leaves = [demo[HAIKU].pk, demo[ARITHMETIC].pk]
    scope = GenerationRun.Scope.SELECTED
    return run_create(teacher=teacher, user=user, scope=scope, leaf_ids=leaves, samples_per_leaf=samples_per_leaf)


def assert_exactly_the_target(run: GenerationRun) -> None:
    items = list(run.items.values("id", "state", "kept", "target"))
    assert {item["state"] for item in items} == {State.DONE}
    assert all(item["kept"] == item["target"] for item in items)
    rows = list(Sample.objects.filter(run=run).values_list("idempotency_key", "item_id", "question"))
    assert len(rows) == len({key for key, _, _ in rows}) == run.items.aggregate(t=Sum("target"))["t"]
    assert len({(item, question) for _, item, question in rows}) == len(rows)  # no sample twice, under any key


def test_a_killed_workers_items_are_taken_over_from_their_leases_asking_again_only_what_was_in_flight(
    queued, settings, broker, teacher, teacher_server, curator, demo, tmp_path
):
    script = teacher_server.script
    script.latency = 0.05
    env = env_for(settings)
    doomed = Worker("doomed", tmp_path / "doomed.log", env)
    workers = [doomed]
    try:
        doomed.wait_ready()
        run = run_create(teacher=teacher, user=curator, samples_per_leaf=12)
        wait_for(
            lambda: run.items.filter(state=State.DONE).exists() and Sample.objects.filter(run=run).exists(),
            what="the first items to finish",
            describe=lambda: describe(run, doomed),
        )
        # Hold every answer back, and wait until each answer the worker did get is saved: what it asks now is
        # exactly what is in flight when it dies.
        script.hold()
        model = teacher.model

        def settled():
            with script.lock:
                answered = sum(1 for e in script.exchanges if e["status"] == 200 and e["model"] == model)
                waiting = len(script.held) == script.in_flight > 0
            return waiting and TeacherResponse.objects.filter(model=model).count() == answered

        wait_for(settled, what="every answer received to be saved", describe=lambda: describe(run, doomed))
        doomed.kill()
        killed_at = timezone.now()
        # Read after the kill: an item whose last answers were saved may still have been finishing before it.
        held = {item.pk: item for item in run.items.filter(state=State.RUNNING)}
        assert held and all(item.lease_owner.startswith(owner_of(doomed)) for item in held.values())
        # What is in flight is read after the kill: on a busy machine the worker may send another request (a next
        # item's first) between the wait above and its death, and that one, too, was in flight when it died.
        time.sleep(0.5)  # a request the dead process had already written reaches the server's gate
        with script.lock:
            in_flight = Counter(request_key(script.requests_sent[number - 1]) for number in script.held)
        script.release()  # the answers now go to a dead process

        # Nobody renews a dead process's leases: each runs out within one lease of the kill.
        for item in run.items.filter(pk__in=held):
            assert item.state == State.RUNNING and item.lease_owner == held[item.pk].lease_owner
            assert item.lease_until <= killed_at + timedelta(seconds=LEASE)

        fresh = Worker("fresh", tmp_path / "fresh.log", env, beat=True)
        workers.append(fresh)
        fresh.wait_ready()
        wait_for(
            finished(run, Status.SUCCEEDED, Status.PARTIAL, Status.FAILED),
            what="the run to finish",
            describe=lambda: describe(run, fresh),
        )
    finally:
        script.release()
        for worker in workers:
            worker.kill()

    assert run.status == Status.SUCCEEDED, describe(run)
    assert_exactly_the_target(run)
    # The fresh worker took over every item the dead one held, each on its second attempt.
    for item in run.items.filter(pk__in=held):
        assert item.attempts == 2 and item.lease_owner.startswith(owner_of(fresh)), (item.pk, item.lease_owner)
    # Asked twice: only (and at most) the calls that were in flight when the worker died.
    asked = Counter(request_key(body) for body in script.requests_sent)
    again = Counter({key: count - 1 for key, count in asked.items() if count > 1})
    assert again and set(again) <= set(in_flight), "an answer the dead worker had received was asked again"
    assert all(again[key] <= in_flight[key] for key in again)


def test_a_slow_but_live_worker_keeps_its_items_though_each_call_outlasts_the_lease(
    queued, settings, broker, teacher, teacher_server, curator, demo, tmp_path
):
    teacher_server.script.latency = LEASE * 0.75  # a round of calls takes several leases
    worker = Worker("slow", tmp_path / "slow.log", env_for(settings, LABWEB_WORK_LEASE_SECONDS="1"), beat=True)
    try:
        worker.wait_ready()
        run = run_create(
            teacher=teacher, user=curator, scope=GenerationRun.Scope.SELECTED, leaf_ids=[demo[HAIKU].pk],
            samples_per_leaf=3,
        )  # fmt: skip
        wait_for(finished(run, Status.SUCCEEDED, Status.PARTIAL, Status.FAILED), what="the run to finish")
    finally:
        worker.kill()
    assert run.status == Status.SUCCEEDED, describe(run)
    assert set(run.items.values_list("attempts", flat=True)) == {1}  # the reaper, every half second, took none
    asked = Counter(request_key(body) for body in teacher_server.script.requests_sent)
    assert max(asked.values()) == 1
    assert_exactly_the_target(run)


def test_a_teacher_out_of_reach_pauses_the_run_which_resumes_once_it_is_back(
    queued, settings, broker, teacher, teacher_server, curator, demo, tmp_path
):
    script = teacher_server.script
    script.unreachable = True
    worker = Worker("pausing", tmp_path / "pausing.log", env_for(settings))
    try:
        worker.wait_ready()
        run = haiku_and_arithmetic(teacher, curator, demo, samples_per_leaf=6)
        # The probe before the run finds the teacher out of reach: paused with its error, nothing asked.
        wait_for(
            finished(run, Status.PAUSED), what="the probe to pause the run", describe=lambda: describe(run, worker)
        )
        assert "Cannot reach the teacher" in run.error and teacher_server.url in run.error
        assert set(run.items.values_list("attempts", flat=True)) == {0} and script.requests == 0

        script.unreachable = False
        run_resume(run=run, user=curator)
        wait_for(
            lambda: Sample.objects.filter(run=run).exists(), what="samples", describe=lambda: describe(run, worker)
        )
        # The teacher goes away mid-run: its failed connections (after their retries) pause the run, no item fails.
        script.unreachable = True
        wait_for(finished(run, Status.PAUSED), what="the run to pause", describe=lambda: describe(run, worker))
        assert "Cannot reach the teacher" in run.error
        wait_for(
            lambda: not run.items.filter(state=State.RUNNING).exists(),
            what="items in flight to hand themselves back",
            describe=lambda: describe(run, worker),
        )
        assert not run.items.filter(state=State.FAILED).exists()
        assert run.items.filter(state=State.PENDING).exists()
        assert run.events.filter(level=RunEvent.Level.ERROR, message__startswith="Paused: Cannot reach").exists()

        script.unreachable = False
        run_resume(run=run, user=curator)
        wait_for(finished(run, Status.SUCCEEDED, Status.PARTIAL, Status.FAILED), what="the run to finish")
    finally:
        script.unreachable = False
        worker.kill()
    assert run.status == Status.SUCCEEDED, describe(run)
    assert_exactly_the_target(run)


def test_items_that_keep_failing_end_the_run_done_with_failed_items_and_retry_failed_items_finishes_it(
    queued, settings, broker, teacher, teacher_server, curator, operator, demo, tmp_path
):
    script = teacher_server.script
    haiku_task = demo[HAIKU].task_description
    script.fail_matching = haiku_task  # every prompt about the haiku leaf answers HTTP 500
    env = env_for(settings, LABWEB_ITEM_RETRIES="1", LABWEB_ITEM_RETRY_DELAY="0.2")
    worker = Worker("failing", tmp_path / "failing.log", env, beat=True)
    try:
        worker.wait_ready()
        run = haiku_and_arithmetic(teacher, curator, demo, samples_per_leaf=4)
        wait_for(finished(run, Status.SUCCEEDED, Status.PARTIAL, Status.FAILED), what="the run to finish")
        assert run.status == Status.PARTIAL, describe(run, worker)
        failed = list(run.items.filter(state=State.FAILED))
        assert failed and {item.leaf_path for item in failed} == {HAIKU}
        assert run.error.startswith(f"Done with {len(failed)} failed work item")
        for item in failed:
            # Tried twice (the second after its delay), then given up with the teacher's error.
            assert item.failures == 2 and item.attempts == 2 and "HTTP 500" in item.error
            levels = list(item.events.order_by("pk").values_list("level", flat=True))
            assert levels == [RunEvent.Level.WARNING, RunEvent.Level.ERROR]
        assert not run.items.filter(leaf_path=ARITHMETIC).exclude(state=State.DONE).exists()

        # The run page says so, and offers to retry them.
        browser = Client()
        browser.force_login(operator)
        page = browser.get(reverse("generation:run_detail", args=[run.pk])).content.decode()
        assert f"done with {len(failed)} failed item" in page and 'id="retry-failed"' in page

        script.fail_matching = ""
        api = APIClient()
        api.force_authenticate(operator)
        response = api.post(f"/api/runs/{run.pk}/retry-failed/")
        assert response.status_code == 200, response.content
        assert response.json()["status"] in (Status.QUEUED, Status.RUNNING)
        wait_for(finished(run, Status.SUCCEEDED, Status.PARTIAL, Status.FAILED), what="the retried run to finish")
    finally:
        worker.kill()
    assert run.status == Status.SUCCEEDED, describe(run)
    assert_exactly_the_target(run)
    # A run with nothing failed has nothing to retry.
    assert api.post(f"/api/runs/{run.pk}/retry-failed/").status_code == 409


def test_the_lease_keeper_renews_what_its_process_holds_and_nothing_taken_over(queued, teacher, curator, demo):
    run = run_create(
        teacher=teacher, user=curator, scope=GenerationRun.Scope.SELECTED, leaf_ids=[demo[HAIKU].pk],
        samples_per_leaf=2,
    )  # fmt: skip
    mine, taken = list(run.items.order_by("pk"))[:2]
    soon = timezone.now() + timedelta(seconds=1)
    for item in (mine, taken):
        assert item_claim(item_id=item.pk, owner=f"{jobs.worker_name()}/{item.pk}")
    WorkItem.objects.filter(pk__in=[mine.pk, taken.pk]).update(lease_until=soon)
    with jobs.lease_kept(WorkItem, mine.pk, f"{jobs.worker_name()}/{mine.pk}", 60):
        with jobs.lease_kept(WorkItem, taken.pk, f"{jobs.worker_name()}/{taken.pk}", 60):
            WorkItem.objects.filter(pk=taken.pk).update(lease_owner="another-worker/1")  # taken over meanwhile
            assert jobs.renew_held() == 1
    assert jobs.renew_held() == 0  # released: no longer this process's to renew
    mine.refresh_from_db()
    taken.refresh_from_db()
    assert mine.lease_until > soon + timedelta(seconds=30)
    assert taken.lease_until == soon and taken.lease_owner == "another-worker/1"


def test_a_run_whose_queued_messages_the_broker_lost_is_sent_again_and_done_exactly_once(
    queued, settings, broker, teacher, teacher_server, curator, demo, tmp_path
):
    from generation.tasks import dispatch_run

    run = run_create(
        teacher=teacher, user=curator, scope=GenerationRun.Scope.SELECTED, leaf_ids=[demo[HAIKU].pk],
        samples_per_leaf=6,
    )  # fmt: skip
    dispatch_run(run.pk)  # what the first worker to take the dispatch message does: every item is sent
    assert run.items.filter(queued_at__isnull=True).count() == 0 and jobs.broker_messages("generation") > 0
    broker.flushdb()  # the broker restarts before any worker took them: Redis keeps nothing on disk
    assert jobs.broker_messages("generation") == 0
    worker = Worker("after", tmp_path / "after.log", env_for(settings, LABWEB_QUEUED_RESEND_SECONDS="1"), beat=True)
    try:
        worker.wait_ready()
        wait_for(
            finished(run, Status.SUCCEEDED, Status.PARTIAL, Status.FAILED),
            what="the run to finish",
            describe=lambda: describe(run, worker),
        )
        time.sleep(2)  # a few more reaper rounds: nothing is sent again once the items are done
    finally:
        worker.kill()
    assert run.status == Status.SUCCEEDED, describe(run)
    assert_exactly_the_target(run)
    assert set(run.items.values_list("attempts", flat=True)) == {1}
    asked = Counter(request_key(body) for body in teacher_server.script.requests_sent)
    assert max(asked.values()) == 1
    warnings = list(run.events.filter(message__contains="holds no message").values_list("message", flat=True))
    assert len(warnings) == 1 and f"{run.items.count()} queued items" in warnings[0], warnings


def test_queued_messages_that_wait_in_the_broker_are_not_sent_again(queued, settings, broker, teacher, curator, demo):
    from generation.services.runs import requeue_expired
    from generation.tasks import dispatch_run

    settings.LABWEB_QUEUED_RESEND_SECONDS = 1
    run = run_create(
        teacher=teacher, user=curator, scope=GenerationRun.Scope.SELECTED, leaf_ids=[demo[HAIKU].pk],
        samples_per_leaf=6,
    )  # fmt: skip
    dispatch_run(run.pk)
    waiting = jobs.broker_messages("generation")
    assert waiting == run.items.count() + 1  # and run_create's own dispatch message
    time.sleep(1.2)  # past the grace, no worker running: the messages wait, they are not lost
    requeue_expired()
    assert jobs.broker_messages("generation") == waiting
    assert not run.events.filter(message__contains="holds no message").exists()
    broker.delete("generation")  # lost after all
    requeue_expired()
    assert jobs.broker_messages("generation") == run.items.count()  # each item sent once more
    requeue_expired()
    assert jobs.broker_messages("generation") == run.items.count()  # and only once
