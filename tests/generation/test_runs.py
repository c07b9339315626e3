"""Generation runs end to end: planning, processing work items, lineage, leases, cancel/resume, failures, cache."""

import json
import re
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone
from rest_framework.test import APIClient

from curation.services import document_delete, leaf_create, leaf_update
from generation.models import GenerationRun, RunEvent, Sample, WorkItem
from generation.sdg.chunking import chunk_document
from generation.sdg.keepable import unkeepable
from generation.sdg.prompts import prompt_versions
from generation.services.counters import counters_recount
from generation.services.items import item_process
from generation.services.runs import requeue_expired, run_cancel, run_create, run_dispatch, run_resume
from tests.support.sdg import ARITHMETIC, HAIKU, MEETINGS, MOONS

pytestmark = pytest.mark.django_db(transaction=True)

Scope = GenerationRun.Scope
Status = GenerationRun.Status
State = WorkItem.State


def plan(teacher, user, demo, *paths, scope=Scope.SELECTED, samples_per_leaf=4, **options) -> GenerationRun:
    leaf_ids = [demo[path].pk for path in paths] if paths else None
    return run_create(
        teacher=teacher, user=user, scope=scope, leaf_ids=leaf_ids, samples_per_leaf=samples_per_leaf, **options
    )


def refreshed(run: GenerationRun) -> GenerationRun:
    run.refresh_from_db()
    return run


def sample_rows(run: GenerationRun) -> list[tuple]:
    return sorted(Sample.objects.filter(run=run).values_list("idempotency_key", "question", "response", "context"))


def expected_total(run: GenerationRun) -> int:
    return run.items.aggregate(total=Sum("target"))["total"]


def assert_complete(run: GenerationRun) -> None:
    run = refreshed(run)
    assert run.status == Status.SUCCEEDED, (run.status, run.error)
    items = list(run.items.all())
    assert {item.state for item in items} == {State.DONE}
    assert all(item.kept == item.target for item in items), [(str(i), i.kept, i.target) for i in items]
    keys = list(Sample.objects.filter(run=run).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys)) == expected_total(run)


def queued_tasks(broker, queue: str = "generation") -> Counter:
    """The names of the tasks waiting in a queue (kombu's JSON envelope carries them in its headers)."""
    return Counter(json.loads(message)["headers"]["task"] for message in broker.lrange(queue, 0, -1))


def test_run_create_queues_one_dispatch_task_which_queues_each_work_item_once(queued, broker, teacher, curator, demo):
    run = plan(teacher, curator, demo, HAIKU, MOONS, samples_per_leaf=4)
    items = list(run.items.all())
    # Haiku: 6 seeds share 4 samples (1,1,1,1,0,0: a seed with nothing to make gets no item); moons: 2 chunks.
    assert Counter(item.leaf_path for item in items) == {HAIKU: 4, MOONS: 2}
    assert sorted(item.target for item in items if item.leaf_path == MOONS) == [2, 2]
    assert {item.state for item in items} == {State.PENDING}
    assert refreshed(run).status == Status.QUEUED
    # The request that made the run sent one message; the dispatch task sends the items'.
    assert queued_tasks(broker) == {"generation.tasks.dispatch_run": 1}
    assert broker.llen("default") == 0
    assert run_dispatch(run_id=run.pk) == len(items)
    assert queued_tasks(broker) == {"generation.tasks.dispatch_run": 1, "generation.tasks.process_item": len(items)}
    # A dispatch task delivered twice, or a resume's, sends nothing for an item already on its way or done.
    assert item_process(item_id=items[0].pk) == "done"
    assert run_dispatch(run_id=run.pk) == 0
    assert queued_tasks(broker)["generation.tasks.process_item"] == len(items)


def test_resume_sends_only_the_items_it_put_back(queued, broker, teacher, curator, demo):
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=3)
    assert run_dispatch(run_id=run.pk) == 3
    first, *rest = list(run.items.order_by("pk"))
    WorkItem.objects.filter(pk=first.pk).update(state=State.FAILED)
    broker.flushdb()
    run_resume(run=run, user=curator)
    assert queued_tasks(broker) == {"generation.tasks.dispatch_run": 1}
    assert run_dispatch(run_id=run.pk) == 1
    assert queued_tasks(broker)["generation.tasks.process_item"] == 1


def test_a_selected_run_writes_samples_with_full_lineage(eager, teacher, curator, demo, script):
    run = plan(teacher, curator, demo, HAIKU, MEETINGS, MOONS, samples_per_leaf=6)
    assert_complete(run)
    run = refreshed(run)
    assert run.prompt_versions == prompt_versions()
    assert "api_key" not in run.teacher_config and "sk-never-shown" not in str(run.teacher_config)
    assert run.started_at and run.finished_at
    versions = {f"{name}@v{version}" for name, version in run.prompt_versions.items()}
    by_leaf = Counter(Sample.objects.filter(run=run).values_list("leaf_path", flat=True))
    assert by_leaf == {HAIKU: 6, MEETINGS: 6, MOONS: 6}
    for sample in Sample.objects.filter(run=run).select_related("item", "leaf"):
        item = sample.item
        assert sample.leaf == demo[sample.leaf_path] and sample.leaf_path == item.leaf_path
        assert sample.idempotency_key.startswith(f"{run.pk}:{item.pk}:")
        assert sample.teacher_id == teacher.pk and sample.teacher_model == teacher.model
        assert sample.seed_indices and all(isinstance(i, int) for i in sample.seed_indices)
        assert sample.prompts and set(sample.prompts) <= versions
        assert all(re.fullmatch(r"\w+@v\d+", ref) for ref in sample.prompts)
        assert sample.scores and sample.rationales and sample.raw
        assert all(sample.rationales.values())
        assert sample.question and sample.response
        assert sample.steered_verdicts == []  # a server's judges write their own verdicts
        if sample.leaf_path == MOONS:
            assert sample.kind == "knowledge"
            assert sample.chunk_index == item.chunk_index is not None
            assert sample.context == item.spec["chunk"]
            assert sample.scores["faithful"] is True
        else:
            assert sample.kind == "skills" and sample.chunk_index is None
            assert item.seed_index in sample.seed_indices
            assert (sample.context is not None) == (sample.leaf_path == MEETINGS)
    for item in run.items.all():
        assert item.stats["calls"] > 0 and item.counts
        assert item.attempts == 1 and item.lease_until is None
    assert sum(item.stats["calls"] for item in run.items.all()) == script.requests
    assert RunEvent.objects.filter(run=run, message__startswith="Run succeeded").exists()


def test_an_all_scope_run_meets_every_leafs_target(eager, teacher, curator, demo):
    run = plan(teacher, curator, demo, scope=Scope.ALL, samples_per_leaf=3)
    assert_complete(run)
    by_leaf = Counter(Sample.objects.filter(run=run).values_list("leaf_path", flat=True))
    assert by_leaf == {HAIKU: 3, MEETINGS: 3, MOONS: 3, ARITHMETIC: 3}


def test_changed_scope_plans_only_the_leaf_edited_since_the_import(eager, teacher, curator, demo):
    haiku = demo[HAIKU]
    leaf_update(
        leaf=haiku,
        user=curator,
        expected_revision=haiku.revision,
        task_description="Writing a haiku on a given subject, in three lines of five, seven and five syllables.",
    )
    run = plan(teacher, curator, demo, scope=Scope.CHANGED, samples_per_leaf=2)
    assert set(run.items.values_list("leaf_path", flat=True)) == {HAIKU}
    assert_complete(run)
    spec = run.items.first().spec["leaf"]
    assert spec["task_description"].startswith("Writing a haiku on a given subject, in three lines")


def test_changed_scope_with_nothing_changed_fails_with_nothing_to_generate(eager, teacher, curator, demo, script):
    run = refreshed(plan(teacher, curator, demo, scope=Scope.CHANGED))
    assert run.status == Status.FAILED
    assert "Nothing to generate" in run.error
    assert not run.items.exists() and script.requests == 0


def test_processing_a_done_item_again_is_skipped_and_adds_nothing(eager, teacher, curator, demo, script):
    run = plan(teacher, curator, demo, HAIKU, MOONS, samples_per_leaf=4)
    assert_complete(run)
    before, requests = sample_rows(run), script.requests
    for item in run.items.all():
        assert item_process(item_id=item.pk) == "skipped"
    assert sample_rows(run) == before
    assert script.requests == requests
    assert set(run.items.values_list("attempts", flat=True)) == {1}


def test_an_item_whose_lease_expired_is_reclaimed_and_finishes_without_duplicates(queued, teacher, curator, demo):
    run = plan(teacher, curator, demo, HAIKU, MEETINGS, samples_per_leaf=6)
    died_after_writing, died_before_writing, *rest = list(run.items.order_by("pk"))
    assert item_process(item_id=died_after_writing.pk) == "done"
    written = sample_rows(run)
    assert len(written) == died_after_writing.target
    past = timezone.now() - timedelta(seconds=5)
    # A worker that wrote its samples and died before marking the item done, and one that died at once.
    WorkItem.objects.filter(pk=died_after_writing.pk).update(
        state=State.RUNNING, lease_owner="dead-worker-1", lease_until=past, kept=0, finished_at=None
    )
    WorkItem.objects.filter(pk=died_before_writing.pk).update(
        state=State.RUNNING, lease_owner="dead-worker-2", lease_until=past, attempts=1
    )
    assert item_process(item_id=died_after_writing.pk) == "done"
    assert item_process(item_id=died_before_writing.pk) == "done"
    assert set(written) <= set(sample_rows(run))  # the same samples, under the same keys
    for item in (died_after_writing, died_before_writing):
        item.refresh_from_db()
        assert item.state == State.DONE and item.attempts == 2 and item.kept == item.target
        assert item.samples.count() == item.target
    for item in rest:
        assert item_process(item_id=item.pk) == "done"
    assert_complete(run)


def test_an_item_under_a_live_lease_is_left_to_its_worker(queued, teacher, curator, demo, script):
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=2)
    item = run.items.first()
    WorkItem.objects.filter(pk=item.pk).update(
        state=State.RUNNING, lease_owner="busy-worker", lease_until=timezone.now() + timedelta(minutes=5)
    )
    assert item_process(item_id=item.pk) == "skipped"
    item.refresh_from_db()
    assert item.lease_owner == "busy-worker" and not item.samples.exists()
    assert script.requests == 0


def test_requeue_expired_puts_abandoned_items_back_in_the_queue(queued, broker, teacher, curator, demo):
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=3)
    abandoned, live, waiting = list(run.items.order_by("pk"))
    now = timezone.now()
    WorkItem.objects.filter(pk=abandoned.pk).update(
        state=State.RUNNING, lease_owner="dead", lease_until=now - timedelta(1)
    )
    WorkItem.objects.filter(pk=live.pk).update(state=State.RUNNING, lease_owner="busy", lease_until=now + timedelta(1))
    broker.flushdb()
    assert requeue_expired() == 1
    states = dict(run.items.values_list("pk", "state"))
    assert states == {abandoned.pk: State.PENDING, live.pk: State.RUNNING, waiting.pk: State.PENDING}
    assert broker.llen("generation") == 2  # every pending item of the run is queued again; a duplicate is skipped


def test_the_reaper_sends_the_items_of_a_run_whose_dispatch_task_was_lost(queued, broker, teacher, curator, demo):
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=3)
    broker.flushdb()  # the dispatch task died with the worker that took it
    assert requeue_expired() == 0  # no lease expired...
    assert queued_tasks(broker) == {"generation.tasks.process_item": 3}  # ...but every item is on its way now
    assert requeue_expired() == 0
    assert queued_tasks(broker) == {"generation.tasks.process_item": 3}
    assert set(run.items.values_list("state", flat=True)) == {State.PENDING}


def test_cancel_stops_pending_items_and_resume_finishes_with_exactly_the_expected_count(
    celery_mode, teacher, curator, demo, script
):
    celery_mode(eager=False)
    run = plan(teacher, curator, demo, HAIKU, MOONS, samples_per_leaf=4)
    first, second, *pending = list(run.items.order_by("pk"))
    assert item_process(item_id=first.pk) == "done"
    assert item_process(item_id=second.pk) == "done"
    run = run_cancel(run=run, user=curator)
    assert run.status == Status.CANCELLED
    assert set(run.items.exclude(pk__in=[first.pk, second.pk]).values_list("state", flat=True)) == {State.CANCELLED}
    requests = script.requests
    for item in pending:
        assert item_process(item_id=item.pk) == "skipped"
    assert script.requests == requests
    celery_mode(eager=True)
    run_resume(run=run, user=curator)
    assert_complete(run)
    assert Sample.objects.filter(run=run).count() == 8


def test_resume_after_cancel_finishes_an_item_that_was_running_when_cancelled(
    celery_mode, settings, teacher, curator, demo, script
):
    settings.LABWEB_WORK_LEASE_SECONDS = 3  # a heartbeat every second
    celery_mode(eager=False)
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=4)
    running = run.items.order_by("pk").first()
    script.latency = 0.4
    outcome = []

    def work():
        try:
            outcome.append(item_process(item_id=running.pk))
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 10
    while not WorkItem.objects.filter(pk=running.pk, state=State.RUNNING).exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    run_cancel(run=run, user=curator)
    worker.join(15)
    assert outcome == ["stopped"]  # the worker saw the cancellation at its heartbeat
    script.latency = 0
    celery_mode(eager=True)
    run_resume(run=run, user=curator)
    running.refresh_from_db()
    assert running.state == State.DONE, f"the item the cancel stopped is left {running.state}"
    assert_complete(run)


def test_an_invalid_leaf_and_a_knowledge_leaf_without_documents_are_reported_while_the_rest_succeeds(
    eager, teacher, curator, demo
):
    invalid = leaf_create(path="compositional_skills/writing/freeform/limericks", user=curator)
    assert not invalid.is_valid
    moons = demo[MOONS]
    for document in moons.documents.all():
        document_delete(document=document, user=curator, expected_revision=None)
    moons.refresh_from_db()
    assert moons.is_valid and not moons.documents.exists()
    run = run_create(
        teacher=teacher,
        user=curator,
        scope=Scope.SELECTED,
        leaf_ids=[invalid.pk, moons.pk, demo[ARITHMETIC].pk],
        samples_per_leaf=3,
    )
    assert_complete(run)
    assert set(run.items.values_list("leaf_path", flat=True)) == {ARITHMETIC}
    errors = {event.leaf_path: event.message for event in run.events.filter(level=RunEvent.Level.ERROR)}
    assert errors.keys() == {invalid.path, MOONS}
    assert "invalid" in errors[invalid.path]
    assert "source document" in errors[MOONS]
    assert Sample.objects.filter(run=run, leaf_path=ARITHMETIC).count() == 3


def test_a_teacher_failing_every_request_fails_the_items_after_their_retries_and_the_run_with_its_error(
    eager, settings, teacher, curator, demo, script
):
    settings.LABWEB_TEACHER_ATTEMPTS = 2
    settings.LABWEB_TEACHER_RETRY_DELAY = 0.01
    settings.LABWEB_ITEM_RETRIES = 1  # eager: the retry runs at once instead of after its delay
    script.fail_every = 1
    run = refreshed(plan(teacher, curator, demo, HAIKU, samples_per_leaf=3))
    items = list(run.items.all())
    assert len(items) == 3
    assert script.requests == 2 * 2 * len(items)  # one question call per item, tried twice, in each of two tries
    for item in items:
        assert item.state == State.FAILED and item.failures == 2 and item.attempts == 2
        assert "HTTP 500" in item.error and "scripted internal error" in item.error
        assert item.finished_at and item.kept == 0
        retried, given_up = run.events.filter(item=item).order_by("pk")
        assert retried.level == RunEvent.Level.WARNING and "try 1 of 2" in retried.message
        assert given_up.level == RunEvent.Level.ERROR and "after 2 tries" in given_up.message
        assert "scripted internal error" in given_up.message
    assert run.status == Status.FAILED
    assert run.error.startswith("3 work items failed: the teacher's server kept failing (The teacher at ")
    assert run.error.endswith("answered HTTP 500: scripted internal error).")
    assert not Sample.objects.filter(run=run).exists()


def test_a_failing_item_waits_a_delay_that_doubles_and_the_reaper_sends_it_if_its_message_is_lost(
    queued, broker, settings, teacher, curator, demo, script
):
    settings.LABWEB_TEACHER_ATTEMPTS = 1
    settings.LABWEB_ITEM_RETRIES = 2
    settings.LABWEB_ITEM_RETRY_DELAY = 60.0
    script.fail_every = 1
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=1)
    (item,) = run.items.all()
    broker.flushdb()
    for failures, delay in ((1, 60.0), (2, 120.0)):
        before = timezone.now()
        assert item_process(item_id=item.pk) == "retrying"
        after = timezone.now()
        item.refresh_from_db()
        assert item.state == State.PENDING and item.failures == failures
        # The delay doubles with each failure (a quarter either way of jitter).
        assert before + timedelta(seconds=delay * 0.75) <= item.retry_at <= after + timedelta(seconds=delay * 1.25)
        (message,) = [json.loads(m) for m in broker.lrange("generation", 0, -1)]
        assert message["headers"]["task"] == "generation.tasks.process_item" and message["headers"]["eta"]
        # A worker holds a delayed message until its time: one that dies takes it along.
        broker.flushdb()
        assert requeue_expired() == 0 and not queued_tasks(broker)  # not before the delay is over...
        WorkItem.objects.filter(pk=item.pk).update(retry_at=timezone.now() - timedelta(seconds=1))
        requeue_expired()
        assert queued_tasks(broker) == {"generation.tasks.process_item": 1}  # ...and then by the reaper
        broker.flushdb()
    assert item_process(item_id=item.pk) == "failed"
    item.refresh_from_db()
    assert item.state == State.FAILED and item.failures == 3 and item.attempts == 3
    messages = list(run.events.filter(item=item).order_by("pk").values_list("message", flat=True))
    assert ["try 1 of 3" in messages[0], "try 2 of 3" in messages[1], "after 3 tries" in messages[2]] == [True] * 3
    assert refreshed(run).status == Status.FAILED


def test_a_resumed_run_pays_no_new_requests_for_answers_it_already_has(celery_mode, teacher, curator, demo, script):
    celery_mode(eager=False)
    run = plan(teacher, curator, demo, MEETINGS, MOONS, samples_per_leaf=4)
    items = list(run.items.order_by("pk"))
    for item in items[:2]:
        assert item_process(item_id=item.pk) == "done"
    done_rows = sample_rows(run)
    paid = script.requests
    # Everything that was done is lost but the response cache: the items fail and their samples go.
    Sample.objects.filter(run=run).delete()
    WorkItem.objects.filter(pk__in=[i.pk for i in items[:2]]).update(state=State.FAILED, kept=0)
    run_cancel(run=run, user=curator)
    celery_mode(eager=True)
    run_resume(run=run, user=curator)
    assert_complete(run)
    redone = [row for row in sample_rows(run) if row[0].split(":")[1] in {str(i.pk) for i in items[:2]}]
    assert redone == done_rows
    replayed = WorkItem.objects.filter(pk__in=[i.pk for i in items[:2]])
    # Their counters go on from the first attempt: the calls it paid for, then only cache hits.
    assert sum(item.stats["calls"] for item in replayed) == paid
    assert all(item.stats["cached"] > 0 for item in replayed)
    fresh_calls = sum(item.stats["calls"] for item in run.items.exclude(pk__in=[i.pk for i in items[:2]]))
    assert script.requests == paid + fresh_calls


def test_a_run_against_a_knowledge_leaf_uses_chunks_that_fit_the_teachers_context(eager, teacher, curator, demo):
    teacher.context_tokens = 1024
    teacher.save()
    run = plan(teacher, curator, demo, MOONS, samples_per_leaf=4)
    document = demo[MOONS].documents.get().content
    chunk_tokens = max(256, teacher.context_tokens // 2 - 300)
    assert [item.spec["chunk"] for item in run.items.order_by("chunk_index")] == chunk_document(
        document, max_tokens=chunk_tokens
    )[: run.items.count()]
    assert_complete(run)


def _sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_processing_items_leaves_no_database_connection_open_behind(queued, teacher, curator, demo):
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=4)
    before = _sessions()
    for item in run.items.all():
        assert item_process(item_id=item.pk) == "done"
    deadline = time.monotonic() + 2
    while _sessions() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sessions() == before, "item_process left database sessions open"


def test_resume_takes_back_the_items_of_a_worker_that_died(celery_mode, teacher, curator, demo):
    # The reaper does this every minute when celery beat runs; an operator must not have to wait for it.
    celery_mode(eager=False)
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=3)
    abandoned, *rest = list(run.items.order_by("pk"))
    for item in rest:
        assert item_process(item_id=item.pk) == "done"
    WorkItem.objects.filter(pk=abandoned.pk).update(
        state=State.RUNNING, lease_owner="dead-worker", lease_until=timezone.now() - timedelta(seconds=5)
    )
    celery_mode(eager=True)
    run_resume(run=run, user=curator)
    assert_complete(run)


def test_teacher_requests_are_not_logged_one_line_each(caplog, make_teacher):
    import asyncio

    from generation.sdg.teachers import Sampling

    asyncio.run(make_teacher().complete([{"role": "user", "content": "Say hello."}], Sampling()))
    assert not [record.getMessage() for record in caplog.records if "chat/completions" in record.getMessage()]


def test_a_teacher_answer_with_a_nul_character_does_not_leave_the_item_running(queued, teacher, curator, demo, script):
    # PostgreSQL text cannot hold NUL; the answer must be cleaned or the item failed, never left hanging.
    script.nul_every = 1
    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=2)
    item = run.items.order_by("pk").first()
    try:
        outcome = item_process(item_id=item.pk)
    except Exception as exc:  # noqa: BLE001 - what a Celery worker would log, and then forget the item
        outcome = f"raised {exc!r}"
    item.refresh_from_db()
    assert item.state in (State.DONE, State.FAILED), f"the item is left {item.state}; item_process {outcome}"
    assert outcome in ("done", "failed") and item.lease_until is None
    # PostgreSQL cannot even be asked about NUL, so look in Python.
    assert all("\x00" not in text for s in Sample.objects.filter(run=run) for text in (s.question, s.response))


def test_answers_a_person_would_not_keep_never_reach_review_though_every_judge_passes(
    eager, teacher, curator, operator, reviewer, demo, script
):
    # Junk bytes in every third answer that is no verdict (its format kept), garbage in place of every fifth,
    # and every seventh cut off at the token limit; the scripted judges pass everything.
    script.junk_inside_every, script.junk_every, script.cut_every = 3, 5, 7
    run = plan(teacher, curator, demo, HAIKU, MEETINGS, MOONS, samples_per_leaf=4, config={"max_rounds": 12})
    api = APIClient()
    api.force_authenticate(operator)
    stages = api.get(f"/api/runs/{run.pk}/").json()["progress"]["stages"]
    assert sum(by.get("unkeepable", 0) for by in stages.values()) > 0, stages
    api.force_authenticate(reviewer)
    queue = api.get(f"/api/review/items/?run={run.pk}&page_size=100").json()["results"]
    assert len(queue) == Sample.objects.filter(run=run).count() > 0
    for row in queue:
        shown = api.get(f"/api/review/items/{row['id']}/").json()
        assert unkeepable(shown["question"], answer=False) is None, shown["question"]
        assert unkeepable(shown["response"]) is None, shown["response"]
        assert shown["context"] is None or unkeepable(shown["context"], answer=False) is None, shown["context"]


def test_a_teacher_edited_mid_run_does_not_change_the_model_that_run_asks(queued, teacher, curator, demo, script):
    from generation.sdg.teachers.answer_format import QUESTION
    from generation.services.teachers import teacher_update
    from labweb.errors import LabError

    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=2)
    first, second = list(run.items.order_by("pk"))
    assert item_process(item_id=first.pk) == "done"
    try:
        teacher_update(teacher=teacher, user=curator, model="another-model")
    except LabError:
        return  # refusing to edit a teacher that an active run uses keeps the lineage true as well
    assert item_process(item_id=second.pk) == "done"
    probe = QUESTION[-1]["content"]  # the edit probed the new model: no run asked it
    asked = {exchange["model"] for exchange in script.exchanges if exchange["prompt"] != probe}
    assert asked == {run.teacher_config["model"]}, "the samples' lineage names a model the run did not ask"
    assert set(Sample.objects.filter(run=run).values_list("teacher_model", flat=True)) == asked


def test_near_duplicates_across_work_items_of_a_leaf_are_marked_when_the_run_completes(eager, teacher, curator, demo):
    from generation.sdg.pipelines import GeneratedSample
    from generation.services.samples import samples_mark_duplicates, samples_write

    run = plan(teacher, curator, demo, HAIKU, samples_per_leaf=6)
    assert_complete(run)
    assert not Sample.objects.filter(run=run, duplicate_of__isnull=False).exists()
    first, second = run.items.order_by("pk")[:2]

    def candidate(key: str, question: str) -> GeneratedSample:
        return GeneratedSample(
            key=key,
            question=question,
            response="r",
            context=None,
            seed_indices=[0],
            chunk_index=None,
            scores={},
            rationales={},
            raw={},
            prompts=[],
        )

    # Two units of the same leaf, run in parallel, each asked the same thing: the later one is the duplicate.
    samples_write(item=first, samples=[candidate("x1", "Write a haiku about the first snow falling on a quiet town.")])
    samples_write(item=second, samples=[candidate("x2", "Write a haiku about the first snow falling on a quiet city.")])
    assert samples_mark_duplicates(run_id=run.pk, threshold=0.7) == 1
    duplicate = Sample.objects.get(duplicate_of__isnull=False)
    assert duplicate.idempotency_key.endswith(":x2")
    assert duplicate.duplicate_of.idempotency_key.endswith(":x1")
    assert samples_mark_duplicates(run_id=run.pk, threshold=0.7) == 0  # marking twice changes nothing


def test_the_run_page_offers_resume_exactly_when_resume_would_take_the_run(
    eager, client, operator, teacher, curator, demo, script
):
    from labweb.errors import ConflictError

    script.garbage_every = 1  # no answer in the format asked: every item ends done with nothing kept
    run = refreshed(plan(teacher, curator, demo, HAIKU, samples_per_leaf=2))
    assert run.status == Status.FAILED and set(run.items.values_list("state", flat=True)) == {State.DONE}
    client.force_login(operator)

    def offers_resume() -> bool:
        return 'id="resume-run"' in client.get(f"/generation/runs/{run.pk}/").content.decode()

    assert not offers_resume()
    with pytest.raises(ConflictError, match="nothing to resume"):
        run_resume(run=run, user=curator)
    # A run still going with a failed item can be resumed at once, and its page says so.
    WorkItem.objects.filter(pk=run.items.order_by("pk").first().pk).update(state=State.FAILED)
    GenerationRun.objects.filter(pk=run.pk).update(status=Status.RUNNING, finished_at=None)
    assert offers_resume()
    run_resume(run=run, user=curator)
    assert run.items.order_by("pk").first().attempts == 2


def test_run_progress_sums_counters_and_kept_samples_in_the_database_as_the_items_hold_them(
    eager, teacher, curator, demo
):
    from generation.selectors import run_progress

    run = plan(teacher, curator, demo, HAIKU, MOONS, samples_per_leaf=4)
    assert_complete(run)
    # One item "still running": its samples are those it published at its last heartbeat.
    running = run.items.order_by("pk").first()
    WorkItem.objects.filter(pk=running.pk).update(state=State.RUNNING, error="slow teacher")
    # Changed behind the counters' back: the recount finds it and repairs them.
    assert counters_recount(run.pk) and not counters_recount(run.pk)
    items = list(run.items.all())
    progress = run_progress(run)

    assert progress.kept == Sample.objects.filter(run=run).count() == expected_total(run)
    per_leaf = Counter(Sample.objects.filter(run=run).values_list("leaf_path", flat=True))
    assert {leaf.leaf_path: leaf.kept for leaf in progress.leaves} == per_leaf
    stages = Counter()
    for item in items:
        stages.update(item.counts)
    assert {f"{s.stage}.{o}": n for s in progress.stages for o, n in s.outcomes.items()} == stages
    assert progress.teacher["calls"] == sum(item.stats["calls"] for item in items) > 0
    assert progress.teacher_seconds == round(sum(item.stats["seconds"] for item in items), 1)
    assert progress.error_count == 1 and progress.errors[0].id == running.pk
