"""One teacher budget for every worker process, fair between runs, and teachers with several replicas.

The budgets below are real: RedisBudget on the test's Redis (two instances on one key stand for two worker
processes), and two real Celery workers against the scripted teacher server, which records the most
requests it had in flight at once.
"""

import asyncio
import socket
import threading
import time
import uuid

import pytest
import redis
from django.db import connection

from generation.models import GenerationRun, WorkItem
from generation.sdg.teachers import OpenAITeacher, ProcessBudget, RetryPolicy, Sampling, Slot, call_share
from generation.sdg.teachers.limits import Backoff
from generation.sdg.teachers.shared import RedisBudget, budget_key
from generation.selectors import run_estimate, teacher_endpoints
from generation.services.runs import run_create
from generation.services.teachers import teacher_create
from tests.support.teacher_server import TeacherServer
from tests.support.worker import Worker, wait_for, worker_env

HELLO = [{"role": "user", "content": "Say hello."}]


class Holder:
    """Calls that take a slot of `budget` on an event loop of their own and hold it until told to let go."""

    def __init__(self, budget, share: str):
        self.budget, self.share = budget, share
        self.loop = asyncio.new_event_loop()
        self.held: list[Slot] = []
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def ask(self, n: int) -> None:
        async def take():
            call_share.set(self.share)
            self.held.append(await self.budget.acquire())

        for _ in range(n):
            asyncio.run_coroutine_threadsafe(take(), self.loop)

    def let_go(self, n: int = 1) -> None:
        async def release():
            for _ in range(n):
                self.budget.release(self.held.pop())

        asyncio.run_coroutine_threadsafe(release(), self.loop).result(5)

    def close(self) -> None:
        async def stop():
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0.01)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self.loop)


@pytest.fixture
def shared_redis(settings):
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = f"test:budget:{uuid.uuid4().hex[:8]}"
    budgets: list[RedisBudget] = []

    def make(limits, **options) -> RedisBudget:
        options.setdefault("lease", 1.0)
        options.setdefault("renew", 0.2)
        budgets.append(RedisBudget(client, key, limits, **options))
        return budgets[-1]

    yield make
    for budget in budgets:
        budget.stop()
    for name in client.keys(f"{key}:*"):
        client.delete(name)
    client.close()


def test_two_processes_on_one_budget_never_hold_more_than_its_limit_together(shared_redis):
    first, second = shared_redis([3, 2]), shared_redis([3, 2])
    in_flight = {0: 0, 1: 0}
    most = {0: 0, 1: 0}
    lock = threading.Lock()

    async def calls(budget, share: str, n: int):
        async def one():
            call_share.set(share)
            slot = await budget.acquire()
            with lock:
                in_flight[slot.endpoint] += 1
                most[slot.endpoint] = max(most[slot.endpoint], in_flight[slot.endpoint])
            await asyncio.sleep(0.005)
            with lock:
                in_flight[slot.endpoint] -= 1
            budget.release(slot)

        await asyncio.gather(*(one() for _ in range(n)))

    threads = [
        threading.Thread(target=asyncio.run, args=(calls(budget, share, 60),))
        for budget, share in [(first, "run:1"), (second, "run:2"), (second, "run:1")]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert most == {0: 3, 1: 2}  # each endpoint filled to its own limit, never past it


def test_a_dead_process_slots_come_back_within_its_lease_and_not_before(shared_redis):
    doomed, survivor = shared_redis([2]), shared_redis([2])
    dying, living = Holder(doomed, "run:1"), Holder(survivor, "run:2")
    try:
        dying.ask(2)
        wait_for(lambda: len(dying.held) == 2, what="the first process to take both slots")
        living.ask(1)
        time.sleep(2.5)  # more than two leases: the holder is alive and renewing, so its slots stay its own
        assert living.held == []
        doomed.stop()  # as a SIGKILL would: no release, no more renewals
        stopped = time.monotonic()
        wait_for(lambda: living.held, timeout=10, what="the dead process's slot to come back")
        assert time.monotonic() - stopped < 5
    finally:
        dying.close()
        living.close()


def test_a_run_started_while_another_holds_every_slot_gets_half_of_them_as_they_free_up(shared_redis):
    busy, late = Holder(shared_redis([4]), "run:busy"), None
    try:
        busy.ask(14)  # 4 held, 10 more waiting for the same run
        wait_for(lambda: len(busy.held) == 4, what="the busy run to take every slot")
        late = Holder(shared_redis([4]), "run:late")
        late.ask(4)
        time.sleep(0.3)  # the late run's wants are known before the first slot frees
        for released in range(1, 5):
            busy.let_go()
            wait_for(lambda: len(busy.held) + len(late.held) == 4, what=f"slot {released} to be taken again")
        # First come first served would give the late run nothing until the busy run's 10 waiting calls had
        # gone; a fair budget gives it every freed slot until both hold as many.
        assert (len(busy.held), len(late.held)) == (2, 2)
    finally:
        busy.close()
        if late:
            late.close()


def test_a_process_budget_shares_its_slots_fairly_between_runs():
    budget = ProcessBudget([2])
    busy, late = Holder(budget, "run:busy"), Holder(budget, "run:late")
    try:
        busy.ask(6)
        wait_for(lambda: len(busy.held) == 2, what="the busy run to take both slots")
        late.ask(2)
        time.sleep(0.05)
        busy.let_go()
        wait_for(lambda: late.held, what="the late run to get the freed slot")
        assert (len(busy.held), len(late.held)) == (1, 1)
    finally:
        busy.close()
        late.close()


def test_calls_go_to_the_least_loaded_replica_and_around_one_that_is_down(make_teacher):
    with TeacherServer() as first, TeacherServer() as second:
        first.script.latency = second.script.latency = 0.05
        budget = ProcessBudget([2, 4], backoff=Backoff(base=60))
        teacher = OpenAITeacher(
            base_url=first.url,
            model="replicated",
            max_concurrency=2,
            replicas=[(second.url, 4)],
            budget=budget,
            retry=RetryPolicy(attempts=3, base_delay=0.001),
        )

        async def calls(n: int):
            return await asyncio.gather(
                *(teacher.complete(HELLO, Sampling(seed=i)) for i in range(n)), return_exceptions=True
            )

        answers = asyncio.run(calls(12))
        assert not [answer for answer in answers if isinstance(answer, Exception)]
        assert (first.script.max_in_flight, second.script.max_in_flight) == (2, 4)
        # Both filled in proportion to their limits.
        assert first.script.requests + second.script.requests == 12 and second.script.requests > first.script.requests
        second.httpd.shutdown()
        second.httpd.server_close()
        before = first.script.requests
        answers = asyncio.run(calls(12))
        assert not [answer for answer in answers if isinstance(answer, Exception)]
        assert first.script.requests - before == 12
        state = budget.states()[1]
        assert state.down_seconds > 0 and "Cannot reach" in state.error


@pytest.mark.parametrize("shared", [False, True], ids=["process", "redis"])
def test_a_replica_taken_out_is_tried_again_after_its_backoff_and_takes_calls_again(shared_redis, shared):
    with TeacherServer() as first, TeacherServer() as second:
        first.script.latency = second.script.latency = 0.02
        backoff = Backoff(base=0.3, max=0.3)
        budget = shared_redis([2, 2], backoff=backoff) if shared else ProcessBudget([2, 2], backoff=backoff)
        teacher = OpenAITeacher(
            base_url=first.url,
            model=f"m-{uuid.uuid4().hex[:8]}",
            max_concurrency=2,
            replicas=[(second.url, 2)],
            budget=budget,
            retry=RetryPolicy(attempts=3, base_delay=0.001),
        )

        def calls(n: int) -> list:
            async def gather():
                return await asyncio.gather(
                    *(teacher.complete(HELLO, Sampling(seed=i)) for i in range(n)), return_exceptions=True
                )

            return [answer for answer in asyncio.run(gather()) if isinstance(answer, Exception)]

        second.script.unreachable = True  # it drops every connection unanswered
        assert calls(8) == []  # the calls went around it
        # (A shared budget tells Redis at its next sync, a fraction of a second later.)
        wait_for(lambda: budget.states()[1].failures >= 1, what="the replica to be taken out")
        assert "Cannot reach" in budget.states()[1].error
        second.script.unreachable = False
        wait_for(lambda: budget.states()[1].down_seconds == 0, what="the replica's backoff to run out")
        before = second.script.requests
        assert calls(8) == []
        assert second.script.requests > before  # back in: it takes its share again
        wait_for(lambda: budget.states()[1].failures == 0, what="the replica's failures to be forgotten")


# --- real worker processes ---------------------------------------------------------------------------------


@pytest.fixture
def start_two_workers(settings, broker, tmp_path):
    started: list[Worker] = []

    def start(**extra: str) -> list[Worker]:
        env = worker_env(
            connection.settings_dict["NAME"],
            settings.CELERY_BROKER_URL,
            LABWEB_TEACHER_RETRY_DELAY="0.02",
            LABWEB_TEACHER_SLOT_LEASE_SECONDS="2",
            PYTHONUNBUFFERED="1",
            **extra,
        )
        workers = [Worker(f"w{n}", tmp_path / f"worker-{n}.log", env, concurrency=8) for n in (1, 2)]
        started.extend(workers)
        for worker in workers:
            worker.wait_ready()
        return workers

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def two_workers(start_two_workers):
    return start_two_workers()


def wait_run(run: GenerationRun, workers, timeout: float = 120) -> GenerationRun:
    def finished():
        run.refresh_from_db()
        return run.status not in (GenerationRun.Status.QUEUED, GenerationRun.Status.RUNNING)

    deadline = time.monotonic() + timeout
    while not finished():
        if time.monotonic() > deadline:
            pytest.fail(f"the run did not finish: {run.status}\n" + "\n".join(w.tail(15) for w in workers))
        time.sleep(0.1)
    return run


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_keep_each_replicas_one_limit_and_finish_when_one_goes_down(
    queued, two_workers, curator, demo, client
):
    with TeacherServer() as first, TeacherServer() as second:
        first.script.latency = second.script.latency = 0.05
        teacher = teacher_create(
            user=curator,
            name="Replicated",
            base_url=first.url,
            model=f"m-{uuid.uuid4().hex[:8]}",
            max_concurrency=3,
            replicas=[{"base_url": second.url, "max_concurrency": 2}],
        )
        run = run_create(teacher=teacher, user=curator, scope=GenerationRun.Scope.ALL, samples_per_leaf=12)
        assert run.items.count() > 10  # more than enough for the two workers' 8 threads each
        wait_for(lambda: second.script.requests >= 30, timeout=60, what="the second replica to take calls")
        second.go_down()
        down_at = first.script.requests
        wait_run(run, two_workers)
        assert run.status == GenerationRun.Status.SUCCEEDED, run.error
        assert set(run.items.values_list("state", flat=True)) == {WorkItem.State.DONE}
        for worker in two_workers:
            assert "process_item" in worker.log.read_text(errors="replace"), worker.tail()
        # Both workers together kept to each server's own limit; with a limit per process each server would
        # have had up to twice as many in flight.
        assert (first.script.max_in_flight, second.script.max_in_flight) == (3, 2)
        assert first.script.requests > down_at
        endpoints = {endpoint.base_url: endpoint for endpoint in teacher_endpoints(teacher)}
        assert endpoints[second.url].failures >= 1 and "Cannot reach" in endpoints[second.url].error
        assert endpoints[first.url].state == "up"
        client.force_login(curator)
        page = client.get("/generation/teachers/").content.decode()
        assert second.url in page and "Cannot reach" in page


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_hold_one_teacher_limit_together_and_ask_only_what_the_samples_need(
    queued, two_workers, teacher, teacher_server, curator, demo
):
    script = teacher_server.script
    script.latency = 0.05
    settings = {"scope": GenerationRun.Scope.ALL, "samples_per_leaf": 12}
    estimate = run_estimate(teacher=teacher, **settings)
    run = run_create(teacher=teacher, user=curator, **settings)
    assert run.items.count() > 10  # more than either worker's 8 threads
    wait_run(run, two_workers)
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    items = list(run.items.values("state", "kept", "target", "lease_owner"))
    assert all(item["state"] == WorkItem.State.DONE and item["kept"] == item["target"] for item in items)
    processes = {item["lease_owner"].split("/", 1)[0] for item in items}
    assert processes == {f"{socket.gethostname()}:{worker.pid}" for worker in two_workers}
    # 16 threads between them, one limit of 8: reached, never passed.
    assert script.max_in_flight == teacher.max_concurrency == 8
    # The adaptive stop: with judges that accept, an item asks its generating calls and one chain a sample it
    # keeps, nothing more (the estimate counts exactly that), however its calls were spread over two processes.
    assert script.requests == estimate.calls


def test_the_budget_key_names_the_model_and_every_endpoint_in_order():
    assert budget_key("m", ["http://a", "http://b"]) != budget_key("m", ["http://b", "http://a"])
    assert budget_key("m", ["http://a"]) != budget_key("n", ["http://a"])


class Backends:
    """The most PostgreSQL connections to the test database open at once, sampled every 20 ms from outside."""

    def __init__(self):
        import psycopg

        params = connection.settings_dict
        self.conn = psycopg.connect(
            host=params["HOST"], port=params["PORT"] or 5432, user=params["USER"], dbname="postgres", autocommit=True
        )
        self.name, self.most, self._stop = params["NAME"], 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.02):
            (count,) = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.name]
            ).fetchone()
            self.most = max(self.most, count)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.conn.close()


@pytest.mark.django_db(transaction=True)
def test_pooled_workers_hold_at_most_their_pools_of_connections_and_the_run_completes_exactly_once(
    queued, start_two_workers, teacher, teacher_server, curator, demo
):
    # 16 item threads between two processes; pools of 2 each. Unpooled, each thread keeps its own connection
    # for the whole item (two workers of 64 threads exceed PostgreSQL's default 100 and their items fail).
    workers = start_two_workers(DATABASE_POOL_SIZE="2")
    teacher_server.script.latency = 0.05
    settings = {"scope": GenerationRun.Scope.ALL, "samples_per_leaf": 12}
    estimate = run_estimate(teacher=teacher, **settings)
    with Backends() as backends:
        run = run_create(teacher=teacher, user=curator, **settings)
        assert run.items.count() > 10  # more than either worker's 8 threads
        wait_run(run, workers)
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    items = list(run.items.values("state", "kept", "target", "failures"))
    assert all(item["state"] == WorkItem.State.DONE and item["kept"] == item["target"] for item in items)
    assert not any(item["failures"] for item in items)
    assert teacher_server.script.requests == estimate.calls  # nothing asked twice
    assert run.samples.count() == sum(item["target"] for item in items)
    # Both pools full at most, the test's own connection, and the sampler's own (to another database).
    assert backends.most <= 2 * 2 + 1, backends.most
    for worker in workers:
        log = worker.log.read_text(errors="replace")
        assert "process_item" in log, worker.tail()
        assert " retry: " not in log, worker.tail()  # no task waited for a connection and was sent again
