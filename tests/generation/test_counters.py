"""A run's counters (what the run pages and the API read instead of its work items) against a recount from the
items: through real Celery workers with failures, retries, "retry failed items", a cancel, a resume and a killed
worker's items taken back by the reaper; and the recount command repairing counters that drifted."""

from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from rest_framework.test import APIClient

from generation.models import GenerationRun, LeafCounter, RunCounter, Sample, WorkItem
from generation.services.counters import counters_recount
from generation.services.runs import run_create
from tests.generation.test_recovery import assert_exactly_the_target, describe, env_for, finished, haiku_and_arithmetic
from tests.support.sdg import ARITHMETIC, HAIKU, MOONS
from tests.support.worker import Worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

State = WorkItem.State
Status = GenerationRun.Status
AT_REST = (Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.CANCELLED)


def assert_counted(run: GenerationRun) -> None:
    """The counters equal a recount from the items (taken together: changes under way wait for it)."""
    differences = counters_recount(run.pk, repair=False)
    assert differences == [], describe(run)


def assert_progress_is_the_items(api: APIClient, run: GenerationRun) -> None:
    """What the API shows of a run at rest, against what its items and samples say."""
    progress = api.get(f"/api/runs/{run.pk}/").json()["progress"]
    items = list(run.items.values("leaf_path", "state", "stats", "counts", "target"))
    states = Counter(item["state"] for item in items)
    assert progress["states"] == {state: states[state] for state in State.values}
    assert progress["items"] == len(items) and progress["target"] == sum(i["target"] for i in items)
    assert progress["kept"] == Sample.objects.filter(run=run).count()
    per_leaf = Counter(Sample.objects.filter(run=run).values_list("leaf_path", flat=True))
    assert {leaf["leaf_path"]: leaf["kept"] for leaf in progress["leaves"] if leaf["kept"]} == per_leaf
    assert progress["teacher"]["calls"] == sum(i["stats"].get("calls", 0) for i in items) > 0
    stages = Counter()
    for item in items:
        if item["state"] != State.PENDING:
            stages.update(item["counts"])
    shown = {f"{stage}.{outcome}": n for stage, by in progress["stages"].items() for outcome, n in by.items()}
    assert shown == {key: n for key, n in stages.items() if n}
    listed = next(row for row in api.get("/api/runs/").json()["results"] if row["id"] == run.pk)
    assert listed["items_total"] == len(items) and listed["kept_total"] == progress["kept"]
    assert listed["items_done"] == progress["states"]["done"] and listed["items_failed"] == progress["states"]["failed"]


def counted_while(run: GenerationRun, condition, *, what: str, worker: Worker) -> int:
    """Recount over and over until `condition`; return how many recounts saw items running."""
    seen_running = 0

    def check():
        assert_counted(run)
        nonlocal seen_running
        seen_running += run.items.filter(state=State.RUNNING).exists()
        return condition()

    wait_for(check, what=what, interval=0.02, worker=worker)
    return seen_running


def test_counters_equal_a_recount_through_failures_retries_cancel_resume_and_a_killed_worker(
    queued, settings, broker, teacher, teacher_server, curator, operator, demo, tmp_path
):
    script = teacher_server.script
    script.latency = 0.05
    script.fail_matching = demo[HAIKU].task_description  # the haiku leaf's items fail, are retried, and fail
    env = env_for(settings, LABWEB_ITEM_RETRIES="1", LABWEB_ITEM_RETRY_DELAY="0.2")
    api = APIClient()
    api.force_authenticate(operator)
    workers = [Worker("counted", tmp_path / "counted.log", env, beat=True)]
    try:
        workers[0].wait_ready()
        run = haiku_and_arithmetic(teacher, curator, demo, samples_per_leaf=8)
        assert_counted(run)  # planned: every item pending
        running = counted_while(run, finished(run, *AT_REST), what="the run to finish", worker=workers[0])
        assert running, "no recount saw an item running"
        assert run.status == Status.PARTIAL, describe(run)
        assert run.items.filter(state=State.FAILED).exists() and run.items.filter(failures=2).exists()
        assert_counted(run)
        assert_progress_is_the_items(api, run)

        # Retry the failed items, slower, and cancel while they run: pending ones are cancelled at once, running
        # ones hand themselves back at their next heartbeat.
        script.fail_matching = ""
        script.latency = 0.3
        assert api.post(f"/api/runs/{run.pk}/retry-failed/").status_code == 200
        counted_while(
            run, lambda: run.items.filter(state=State.RUNNING).exists(), what="a retried item", worker=workers[0]
        )
        assert api.post(f"/api/runs/{run.pk}/cancel/").status_code == 200
        assert_counted(run)
        counted_while(
            run, lambda: not run.items.filter(state=State.RUNNING).exists(), what="items to stop", worker=workers[0]
        )
        run.refresh_from_db()
        assert run.status == Status.CANCELLED and run.items.filter(state=State.CANCELLED).exists(), describe(run)
        assert_progress_is_the_items(api, run)

        # Resume, and kill the worker while it holds items: a fresh one's reaper takes them back when their
        # leases run out.
        assert api.post(f"/api/runs/{run.pk}/resume/", {}, format="json").status_code == 200
        counted_while(
            run, lambda: run.items.filter(state=State.RUNNING).exists(), what="a resumed item", worker=workers[0]
        )
        workers[0].kill()
        assert_counted(run)
        held = set(run.items.filter(state=State.RUNNING).values_list("pk", flat=True))
        script.latency = 0.05
        workers.append(Worker("fresh", tmp_path / "fresh.log", env, beat=True))
        workers[1].wait_ready()
        counted_while(run, finished(run, *AT_REST), what="the resumed run to finish", worker=workers[1])
    finally:
        script.fail_matching = ""
        for worker in workers:
            worker.kill()
    assert run.status == Status.SUCCEEDED, describe(run)
    assert held and all(attempts > 1 for attempts in run.items.filter(pk__in=held).values_list("attempts", flat=True))
    assert_counted(run)
    assert_exactly_the_target(run)
    assert_progress_is_the_items(api, run)


def test_the_recount_command_finds_and_repairs_counters_that_drifted(eager, teacher, curator, operator, demo, capsys):
    scope = GenerationRun.Scope.SELECTED
    run = run_create(
        teacher=teacher, user=curator, scope=scope, leaf_ids=[demo[ARITHMETIC].pk, demo[MOONS].pk], samples_per_leaf=4
    )
    other = run_create(teacher=teacher, user=curator, scope=scope, leaf_ids=[demo[HAIKU].pk], samples_per_leaf=2)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, run.error
    call_command("generation_recount", "--check")  # right as the runs made them
    api = APIClient()
    api.force_authenticate(operator)
    right = api.get(f"/api/runs/{run.pk}/").json()["progress"]
    leaves = api.get(f"/api/runs/{run.pk}/leaves/").json()["results"]
    assert [leaf["leaf_path"] for leaf in leaves] == sorted([ARITHMETIC, MOONS]) and right["leaf_count"] == 2
    assert sum(leaf["kept"] for leaf in leaves) == right["kept"] == Sample.objects.filter(run=run).count()

    # Counters that drifted: a leaf's done count, a teacher counter lost, a stage counter that no item has, and an
    # item changed by hand behind them.
    LeafCounter.objects.filter(run=run, leaf_path=ARITHMETIC).update(done=F("done") + 5, kept=F("kept") - 1)
    RunCounter.objects.filter(run=run, name="stats:calls").delete()
    RunCounter.objects.create(run=run, shard=3, name="counts:nonsense.accepted", value=7)
    WorkItem.objects.filter(pk=other.items.order_by("pk").first().pk).update(state=State.FAILED)
    drifted = api.get(f"/api/runs/{run.pk}/").json()["progress"]

    def done(progress: dict) -> int:
        return next(leaf["done"] for leaf in progress["leaves"] if leaf["leaf_path"] == ARITHMETIC)

    assert done(drifted) == done(right) + 5 and drifted["teacher"]["calls"] == 0
    capsys.readouterr()

    with pytest.raises(CommandError) as refused:
        call_command("generation_recount", "--check")
    assert refused.value.returncode == 1
    report = capsys.readouterr()
    assert f"leaf {ARITHMETIC}: done" in report.out and "run stats:calls: 0, not" in report.out
    assert "run counts:nonsense.accepted: 7, not 0" in report.out and f"Run {other.pk}:" in report.out
    assert "the counters of 2 are wrong" in report.err
    assert api.get(f"/api/runs/{run.pk}/").json()["progress"] == drifted  # --check changed nothing

    with pytest.raises(CommandError, match="There is no run 999999"):
        call_command("generation_recount", "999999")
    call_command("generation_recount", str(run.pk))
    assert api.get(f"/api/runs/{run.pk}/").json()["progress"] == right
    with pytest.raises(CommandError):
        call_command("generation_recount", "--check")  # the other run is still wrong: only the one named was
    call_command("generation_recount")
    call_command("generation_recount", "--check")
    assert "the counters of 0 are wrong" in capsys.readouterr().err
    assert api.get(f"/api/runs/{other.pk}/").json()["progress"]["states"]["failed"] == 1
