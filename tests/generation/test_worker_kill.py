"""A real Celery worker killed with SIGKILL in the middle of a run: resume finishes it, exactly once."""

import asyncio
import time
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from generation.models import GenerationRun, Sample, WorkItem
from generation.sdg.pipelines import LeafSpec, PipelineConfig, Unit, unit_runner
from generation.sdg.teachers import CachedTeacher, Completion, OpenAITeacher, RetryPolicy
from generation.services.runs import requeue_expired, run_create
from tests.support.sdg import MemoryCache
from tests.support.worker import Worker, wait_for, worker_env

# About 10-15 s on two cores, so not marked slow.
pytestmark = pytest.mark.django_db(transaction=True)

State = WorkItem.State
Status = GenerationRun.Status


def describe(run: GenerationRun, worker: "Worker") -> str:
    items = run.items.order_by("pk").values_list(
        "pk", "leaf_path", "seed_index", "chunk_index", "state", "attempts", "lease_owner", "lease_until", "kept"
    )
    lines = [f"run {run.status} {run.error}", *map(str, items)]
    log = worker.log.read_text(errors="replace").splitlines()
    lines += [line for line in log if "ERROR" in line or "WARNING" in line or "Traceback" in line][-20:]
    return "\n".join(lines + ["--- worker log tail ---", worker.tail(15)])


def unit_of(item_values: dict) -> tuple:
    return item_values["leaf_path"], item_values["seed_index"], item_values["chunk_index"]


def samples_by_unit(run: GenerationRun) -> Counter:
    rows = Sample.objects.filter(run=run).values_list(
        "item__leaf_path", "item__seed_index", "item__chunk_index", "idempotency_key", "question", "response"
    )
    return Counter((path, seed, chunk, key.split(":", 2)[2], q, r) for path, seed, chunk, key, q, r in rows)


def test_a_run_survives_its_worker_being_killed_mid_run(
    queued, settings, broker, teacher, teacher_server, curator, demo, tmp_path
):
    teacher_server.script.latency = 0.1
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        LABWEB_WORK_LEASE_SECONDS="3",
        LABWEB_TEACHER_RETRY_DELAY="0.05",
        PYTHONUNBUFFERED="1",
    )
    workers: list[Worker] = []
    try:
        first = Worker("doomed", tmp_path / "worker-1.log", env)
        workers.append(first)
        first.wait_ready()
        run = run_create(teacher=teacher, user=curator, scope=GenerationRun.Scope.ALL, samples_per_leaf=12)
        total_items = run.items.count()
        expected = run.items.aggregate(total=Sum("target"))["total"]
        assert total_items > 10 and expected == 48

        def part_done():
            done = run.items.filter(state=State.DONE).count()
            return 3 <= done < total_items and Sample.objects.filter(run=run).exists()

        wait_for(part_done, timeout=60, what="the worker to finish some but not all items")
        first.kill()
        at_kill = Counter(run.items.values_list("state", flat=True))
        assert at_kill[State.DONE] < total_items
        assert at_kill[State.RUNNING] >= 1, f"no item was in flight when the worker died: {at_kill}"

        second = Worker("fresh", tmp_path / "worker-2.log", env)
        workers.append(second)
        second.wait_ready()
        # The dead worker's leases run out; then the reaper (what celery beat runs every minute) puts its items
        # back in the queue, with every pending one, since the messages it had taken died with it.
        leases = run.items.filter(state=State.RUNNING).values_list("lease_until", flat=True)
        last_lease = max((lease for lease in leases if lease), default=timezone.now())
        time.sleep(max(0.0, (last_lease - timezone.now()).total_seconds()) + 0.2)
        assert requeue_expired() == at_kill[State.RUNNING]

        def finished():
            run.refresh_from_db()
            return run.status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

        wait_for(finished, timeout=90, interval=0.2, what="the run to finish", describe=lambda: describe(run, second))
    finally:
        for worker in workers:
            worker.kill()

    assert run.status == Status.SUCCEEDED, run.error
    items = list(run.items.values())
    assert Counter(item["state"] for item in items) == {State.DONE: total_items}
    assert all(item["kept"] == item["target"] for item in items), [
        (unit_of(i), i["kept"], i["target"]) for i in items if i["kept"] != i["target"]
    ]
    samples = samples_by_unit(run)
    assert sum(samples.values()) == sum(item["kept"] for item in items) == expected
    assert max(samples.values()) == 1  # no sample twice, under any key
    keys = list(Sample.objects.filter(run=run).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    for item in items:
        questions = list(Sample.objects.filter(item_id=item["id"]).values_list("question", flat=True))
        assert len(questions) == len(set(questions)), unit_of(item)
    assert any(item["attempts"] > 1 for item in items), "no item was taken over from the dead worker"

    # A clean pass over the same items, replaying the response cache, makes the same samples and no request.
    paid = teacher_server.script.requests
    assert clean_pass(run, teacher_server.url) == samples
    assert teacher_server.script.requests == paid


def clean_pass(run: GenerationRun, url: str) -> Counter:
    """The samples each item of `run` makes when its unit runs once, uninterrupted, on the response cache."""
    from generation.models import TeacherResponse

    model = run.teacher_config["model"]
    cache = MemoryCache()
    for row in TeacherResponse.objects.filter(model=model):
        cache.entries[row.key] = Completion(
            text=row.text,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            finish_reason=row.finish_reason or None,
        )
    client = OpenAITeacher(base_url=url, model=model, retry=RetryPolicy(attempts=1))
    config = PipelineConfig.from_dict(run.config)
    made = Counter()
    for item in run.items.all():
        samples = []

        async def emit(batch, samples=samples):
            samples.extend(batch)

        unit = Unit(
            leaf=LeafSpec(**item.spec["leaf"]),
            target=item.target,
            seed_index=item.seed_index,
            chunk_index=item.chunk_index,
            chunk=item.spec.get("chunk"),
        )
        teacher = CachedTeacher(teacher=client, lookup=cache.lookup, store=cache.store)
        asyncio.run(unit_runner(unit, teacher, config, emit).run())
        made.update((item.leaf_path, item.seed_index, item.chunk_index, s.key, s.question, s.response) for s in samples)
    return made
