"""Generation throughput against a scripted teacher with a fixed latency, per teacher concurrency limit C.

Run: .venv/bin/python bench/bench_generation.py [--concurrency 8 32] [--latency 0.2] [--workers W] [--no-sdg]
    [--processes P]
(PostgreSQL from DATABASE_URL as for every bench; about 2 connections per worker thread. instructlab-sdg is
looked for in /tmp/sdg-venv: bench/RESULTS.md says how it was installed. With --processes, Redis from REDIS_URL,
whose database is emptied.)

The teacher is tests/support/teacher_server.py in a child process, so that the bench process's CPU time is
the orchestrator's alone, extended with the legacy /v1/completions endpoint that instructlab-sdg calls.
For each C, in the same run and against the same server:
  baseline  one asyncio loop sending as many chat completions as LabWeb made through one AsyncOpenAI client
            with a semaphore of C: the best an orchestrator on that client can do;
  labweb    run_create (scope all, dispatch patched out), then every WorkItem through item_process on a
            pool of W threads (W = C unless --workers), the code path of a Celery `-P threads -c W` worker,
            on a fresh response cache (a new sampling seed per run);
            or, with --processes P, P real Celery generation workers (`-P threads -c W` each, W = C unless
            --workers) that share the teacher's one budget in Redis, the run created and dispatched as the
            API does, timed from run_create until the run has finished. cpu is then the workers' CPU;
            --pool N gives them DATABASE_POOL_SIZE=N; BENCH_TIMELINE=1 prints the mean calls in flight
            second by second, BENCH_LOGS=DIR keeps the workers' logs there.
instructlab-sdg, where --sdg-python has it, runs its `full` freeform skills pipeline leaf after leaf as
`ilab data generate` does: against a server that takes one prompt per request (llama.cpp-like; ilab's
batch_size 0) and against one that takes a batch of prompts per request (vLLM-like; batch_size 8, 10
workers). It has no concurrency setting, so it is measured once and compared with each C.
"""

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# A worker runs with DEBUG off (no query log); set before _django's defaults.
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only")

from _django import REPO, test_database  # noqa: E402

SDG_PYTHON = "/tmp/sdg-venv/bin/python"
MODEL = "scripted-teacher"
TEST_DATABASE = "test_labweb_bench_generation"

DEFINITIONS = """\
util = calls/s / (C / latency). overhead = (wall x C - calls x latency) / calls: teacher-slot time per call
beyond the teacher's latency, i.e. what the orchestrator leaves a slot idle (HTTP client and server work,
scheduling, ramp-up and drain included). steady: the same over the middle 80% of calls by start time,
measured at the server: (window x C - server busy time in it) / calls started in it. beyond baseline:
overhead minus the baseline's in the same run, the orchestrator's own share. cpu = CPU time of the bench
process (all threads; not the teacher server, not PostgreSQL) per call; server cpu = the teacher server
process's per request; machine cpu = busy CPU of the whole machine per call (bench, server, PostgreSQL,
anything else running)."""


# --- the teacher server, in a child process -------------------------------------------------------------


def _sdg_answer(prompt: str, rng) -> str:
    from tests.support.teacher_server import _words

    if "diverse questions" in prompt:
        count = int(m.group(1)) if (m := re.search(r"Now generate (\d+) such questions", prompt)) else 30
        return "\n".join(f"[Start of Question]\nExplain the {_words(rng, 8)}.\n[End of Question]" for _ in range(count))
    if "evaluate the synthetic questions" in prompt:
        return "[Start of Evaluation]\nClear and on task.\n[End of Evaluation]\n[Start of Score]\n1\n[End of Score]"
    if "evaluate the quality of the answer" in prompt:
        return "[Start of Evaluation]\nCorrect and complete.\n[End of Evaluation]\n[Start of Score]\n3\n[End of Score]"
    return f"[Start of Response]\nHere is a careful answer: {_words(rng, 40)}.\n[End of Response]"


def _words_in(text) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _serve(conn, latency: float, reject_every: int = 0) -> None:
    import hashlib
    import random

    sys.path.insert(0, str(REPO))
    from tests.support.teacher_server import TeacherScript, TeacherServer

    script = TeacherScript()
    script.latency = latency
    script.reject_question_every = reject_every
    legacy_words = [0, 0]  # prompt and completion words of the legacy endpoint's answers
    spans: list[tuple[float, float]] = []
    prompts = [0]
    server = TeacherServer(script)
    chat = server.httpd.RequestHandlerClass

    class Handler(chat):
        def do_POST(self):
            started = time.perf_counter()
            try:
                if self.path.rstrip("/").endswith("/completions") and "/chat/" not in self.path:
                    self._legacy_completion()
                else:
                    with script.lock:
                        prompts[0] += 1
                    super().do_POST()
            finally:
                with script.lock:
                    spans.append((started, time.perf_counter()))

        def _legacy_completion(self):
            # What instructlab-sdg calls: one prompt or a list of them, `n` completions each, in one latency.
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            batch = body.get("prompt")
            batch = batch if isinstance(batch, list) else [batch]
            n = int(body.get("n") or 1)
            with script.lock:
                script.requests += 1
                prompts[0] += len(batch) * n
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            started = time.perf_counter()
            try:
                time.sleep(script.latency)
                choices = []
                for prompt in batch:
                    for _ in range(n):
                        rng = random.Random(hashlib.sha256(f"{prompt}{len(choices)}".encode()).hexdigest())
                        text = _sdg_answer(prompt, rng)
                        choices.append({"index": len(choices), "text": text, "finish_reason": "stop", "logprobs": None})
                        with script.lock:
                            legacy_words[0] += _words_in(prompt)
                            legacy_words[1] += _words_in(text)
                self._send(
                    200,
                    {
                        "id": f"cmpl-{script.requests}",
                        "object": "text_completion",
                        "created": int(time.time()),
                        "model": body.get("model", MODEL),
                        "choices": choices,
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    },
                )
            finally:
                with script.lock:
                    script.in_flight -= 1
                    script.busy_seconds += time.perf_counter() - started

    server.httpd.RequestHandlerClass = Handler
    with server:
        conn.send(server.url)
        while True:
            command = conn.recv()
            if command == "stop":
                break
            with script.lock:
                if command == "reset":
                    script.requests = script.max_in_flight = prompts[0] = 0
                    script.busy_seconds = 0.0
                    spans.clear()
                    legacy_words[:] = [0, 0]
                    # The server logs every exchange and request; keep memory flat.
                    script.exchanges.clear()
                    script.requests_sent.clear()
                    conn.send(time.process_time())
                else:
                    # Tokens counted as the scripted server's usage counts them, in words, on both endpoints.
                    chat_prompt = sum(
                        _words_in(m.get("content")) for body in script.requests_sent for m in body.get("messages") or []
                    )
                    chat_completion = sum(_words_in(e["text"]) for e in script.exchanges)
                    conn.send(
                        {
                            "prompt_words": chat_prompt + legacy_words[0],
                            "completion_words": chat_completion + legacy_words[1],
                            "requests": script.requests,
                            "prompts": prompts[0],
                            "max_in_flight": script.max_in_flight,
                            "busy_seconds": script.busy_seconds,
                            "spans": list(spans),
                            "cpu": time.process_time(),
                        }
                    )


class Server:
    def __init__(self, latency: float, reject_every: int = 0):
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(child, latency, reject_every), daemon=True
        )
        self.process.start()
        self.url = self.conn.recv()

    def reset(self) -> float:
        """Zero the counters; the server process's CPU time so far."""
        self.conn.send("reset")
        return self.conn.recv()

    def stats(self) -> dict:
        self.conn.send("stats")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(10)


# --- measuring ------------------------------------------------------------------------------------------


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class LoggedErrors(logging.Handler):
    """Counts what asyncio logs at ERROR (tasks whose exception nobody retrieved) instead of printing it."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        self.messages.append(f"{record.getMessage().splitlines()[0]}: {exc!r}"[:160])


def measure(server: "Server", work, *, count_prompts: bool = False) -> dict:
    """Run `work` once; what the bench process, the machine and the teacher server saw meanwhile."""
    server_cpu0 = server.reset()
    times0, busy0, cpu0 = os.times(), machine_busy(), time.process_time()
    started = time.perf_counter()
    extra = work() or {}
    ended = time.perf_counter()
    wall = extra.pop("wall", ended - started)  # a subprocess times itself, without its start-up
    cpu = extra.pop("cpu", time.process_time() - cpu0)
    busy, times = machine_busy() - busy0, os.times()
    stats = server.stats()
    calls = stats["prompts"] if count_prompts else stats["requests"]
    return {
        "wall": wall,
        "calls": calls,
        "requests": stats["requests"],
        "rate": calls / wall,
        "max_in_flight": stats["max_in_flight"],
        "prompt_words": stats["prompt_words"],
        "completion_words": stats["completion_words"],
        "busy": stats["busy_seconds"],
        "spans": sorted(stats["spans"]),
        "clock": (started, ended),  # perf_counter is CLOCK_MONOTONIC, the teacher server's clock too
        "cpu_ms": cpu / calls * 1000,
        "server_cpu_ms": (stats["cpu"] - server_cpu0) / stats["requests"] * 1000,
        "machine_ms": None if count_prompts else busy / calls * 1000,  # a subprocess's start-up is not a call's
        "system_share": (times.system - times0.system) / cpu if cpu and not count_prompts else None,
        **extra,
    }


def derive(row: dict, concurrency: int, latency: float) -> dict:
    row = dict(row)
    row["ideal"] = concurrency / latency
    row["utilisation"] = row["rate"] / row["ideal"]
    row["overhead_ms"] = (row["wall"] * concurrency - row["calls"] * latency) / row["calls"] * 1000
    spans = row["spans"]
    if row["requests"] == row["calls"] and len(spans) >= 10:
        low, high = spans[len(spans) // 10][0], spans[len(spans) * 9 // 10][0]
        in_window = sum(max(0.0, min(end, high) - max(start, low)) for start, end in spans)
        started = sum(1 for start, _ in spans if low <= start < high)
        row["steady_ms"] = ((high - low) * concurrency - in_window) / started * 1000
        row["steady_utilisation"] = in_window / ((high - low) * concurrency)
        # Idle slot time per call (of all calls) before the middle window, in it, and after it.
        begin, end = row["clock"]
        busy_before = sum(max(0.0, min(stop, low) - start) for start, stop in spans)
        busy_after = sum(max(0.0, stop - max(start, high)) for start, stop in spans)
        row["idle_ms"] = tuple(
            1000 * part / row["calls"]
            for part in (
                (low - begin) * concurrency - busy_before,
                (high - low) * concurrency - in_window,
                (end - high) * concurrency - busy_after,
            )
        )
    return row


def baseline(url: str, *, calls: int, concurrency: int, warm: bool):
    """The work of the baseline, for measure(). Warm: its client has made a call before the clock starts."""
    from openai import AsyncOpenAI

    from generation.sdg.prompts import load_prompt

    prompt = load_prompt("question_judge")
    loop = asyncio.new_event_loop()
    state = {}

    async def connect():
        state["client"] = AsyncOpenAI(base_url=url, api_key="not-needed", timeout=120, max_retries=0)
        state["limit"] = asyncio.Semaphore(concurrency)
        if warm:
            await one(-1)

    async def one(number: int) -> str:
        messages = prompt.messages(task_description="bench", context_block="", question=f"Question {number}?")
        async with state["limit"]:
            response = await state["client"].chat.completions.create(
                model=MODEL, messages=messages, temperature=0.7, top_p=1.0, max_tokens=1024, seed=number, n=1
            )
        return response.choices[0].message.content

    async def main():
        if not warm:
            await connect()
        await asyncio.gather(*(one(number) for number in range(calls)))
        await state["client"].close()

    if warm:
        loop.run_until_complete(connect())

    def work():
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    return work


def labweb(*, teacher, user, samples_per_leaf: int, seed: int, workers: int, expected_samples: int, warm: bool):
    """Plan a run as run_create does; return (work, check): process every item, then verify the run."""
    from unittest import mock

    from django.db import close_old_connections

    from generation.models import GenerationRun, Sample, WorkItem
    from generation.services.items import item_process
    from generation.services.runs import run_create

    with mock.patch("generation.services.runs.send_task_on_commit"):
        run = run_create(
            teacher=teacher,
            user=user,
            scope="all",
            samples_per_leaf=samples_per_leaf,
            config={"sampling": {"seed": seed}},
        )
    ids = list(WorkItem.objects.filter(run=run).order_by("pk").values_list("pk", flat=True))
    crashes: list[str] = []

    def process(item_id: int) -> str:
        close_old_connections()  # what Celery's Django fixup does around every task
        try:
            return item_process(item_id=item_id)
        except Exception as error:  # noqa: BLE001 - a crash is a finding to report, not a reason to stop
            crashes.append(f"{type(error).__name__}: {error}".splitlines()[0][:200])
            return "crashed"
        finally:
            close_old_connections()

    pool = ThreadPoolExecutor(max_workers=workers)
    if warm:
        # A worker that has been busy: every thread already holds its database connection.
        barrier = threading.Barrier(workers)

        def connect():
            from django.db import connection

            connection.ensure_connection()
            barrier.wait()

        list(pool.map(lambda _: connect(), range(workers)))
        # ... and the process has made a teacher call: its client exists and is connected on the shared loop.
        from generation.sdg.loop import Bridge
        from generation.sdg.teachers import Sampling
        from generation.services.teachers import teacher_client

        Bridge().run(teacher_client(teacher).complete([{"role": "user", "content": "Warm up."}], Sampling(seed=0)))

    def work():
        with pool:
            outcomes = list(pool.map(process, ids))
        return {"outcomes": {name: outcomes.count(name) for name in sorted(set(outcomes))}}

    def check(row: dict) -> dict:
        run.refresh_from_db()
        row.update(
            items=len(ids),
            samples=Sample.objects.filter(run=run).count(),
            run_status=run.status,
            crashes=len(crashes),
            crash_kinds=sorted(set(crashes))[:3],
        )
        row["complete"] = row["samples"] == expected_samples and run.status == GenerationRun.Status.SUCCEEDED
        return row

    return work, check


def labweb_workers(
    *,
    teacher,
    user,
    samples_per_leaf: int,
    seed: int,
    processes: int,
    threads: int,
    expected_samples: int,
    database: str,
    logs: Path,
    pool: int,
):
    """P real Celery generation workers, started and ready; return (work, check, stop) for measure()."""
    import psutil
    from django.conf import settings

    from generation.models import GenerationRun, Sample
    from generation.services.runs import run_create
    from tests.support.worker import Worker, worker_env

    env = worker_env(
        database, settings.CELERY_BROKER_URL, DEBUG="0", SECRET_KEY="bench-only", DATABASE_POOL_SIZE=str(pool)
    )
    workers = [
        Worker(
            f"gen{teacher.max_concurrency}-{n}",
            logs / f"gen-c{teacher.max_concurrency}-{n}.log",
            env,
            queues="generation",
            concurrency=threads,
        )  # fmt: skip
        for n in range(processes)
    ]
    for worker in workers:
        worker.wait_ready(120)
    state = {}

    def cpu() -> float:
        total = 0.0
        for worker in workers:
            try:
                procs = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def work():
        cpu0 = cpu()
        started = time.perf_counter()
        run = state["run"] = run_create(
            teacher=teacher, user=user, scope="all", samples_per_leaf=samples_per_leaf,
            config={"sampling": {"seed": seed}},
        )  # fmt: skip
        while GenerationRun.objects.filter(pk=run.pk, status__in=["queued", "running"]).exists():
            time.sleep(0.05)
        return {"wall": time.perf_counter() - started, "cpu": cpu() - cpu0, "outcomes": {}}

    def check(row: dict) -> dict:
        run = state["run"]
        run.refresh_from_db()
        row.update(
            items=run.items.count(), samples=Sample.objects.filter(run=run).count(), run_status=run.status,
            crashes=0, crash_kinds=[],
        )  # fmt: skip
        row["complete"] = row["samples"] == expected_samples and run.status == GenerationRun.Status.SUCCEEDED
        return row

    def stop():
        for worker in workers:
            worker.kill()

    return work, check, stop


class PgSessions:
    """Connections PostgreSQL accepted for the test database, and the most open at once (sampled every 50 ms)."""

    def __init__(self, dbname: str):
        import psycopg
        from django.db import connection

        self.dbname = dbname
        settings = connection.settings_dict
        self.dsn = psycopg.conninfo.make_conninfo(
            host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"], dbname="postgres"
        )
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        (self.max_connections,) = self.conn.execute("SHOW max_connections").fetchone()
        self._stop = threading.Event()

    def sessions(self) -> int:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", [self.dbname]).fetchone()
        return row[0] if row else 0

    def _sample(self):
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                self.peak = max(self.peak, conn.execute(query, [self.dbname]).fetchone()[0])

    def __enter__(self):
        self.before, self.peak = self.sessions(), 0
        self._stop.clear()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        time.sleep(0.6)  # a session is counted in pg_stat_database when its backend exits
        self.opened = self.sessions() - self.before


# --- instructlab-sdg, run by the other interpreter -------------------------------------------------------


def sdg_seeds(leaf: int, seeds: int) -> list[dict]:
    return [
        {
            "task_description": f"Bench skill {leaf}: writing a short explanation of a concept.",
            "seed_question": f"Explain concept {leaf}-{index} in two sentences.",
            "seed_response": f"Concept {leaf}-{index} is a bench fixture. It exists to be explained briefly.",
            "leaf_node_type": "freeform_skill",
            "leaf_node_path": f"compositional_skills_bench_leaf_{leaf:02d}",
        }
        for index in range(seeds)
    ]


def sdg_worker(args) -> None:
    """instructlab-sdg's `full` freeform skills pipeline, leaf after leaf, as generate_taxonomy() runs it.

    The package's __init__ imports generate_data, which needs docling and torch for knowledge documents; skills
    generation does not touch them, so the package is entered without running its __init__.
    """
    import importlib.util
    import logging
    import types

    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.disable(logging.WARNING)
    root = importlib.util.find_spec("instructlab").submodule_search_locations[0]
    package = types.ModuleType("instructlab.sdg")
    package.__path__ = [os.path.join(root, "sdg")]
    sys.modules["instructlab.sdg"] = package
    from importlib import metadata, resources

    import instructlab.sdg.blocks.filterblock  # noqa: F401 - what __init__ would import: the blocks register
    import instructlab.sdg.blocks.iterblock  # noqa: F401
    import instructlab.sdg.blocks.llmblock  # noqa: F401
    import instructlab.sdg.blocks.utilblocks  # noqa: F401
    import openai
    from datasets import Dataset
    from instructlab.sdg.pipeline import FULL_PIPELINES_PACKAGE, Pipeline, PipelineContext

    client = openai.OpenAI(base_url=args.sdg_worker, api_key="not-needed")
    batched = args.sdg_mode == "batched"
    # Said here instead of probed: the probe is a request the comparison should not pay for.
    client.server_supports_batched = batched
    ctx = PipelineContext(
        client=client,
        model_family="mixtral",
        model_id=MODEL,
        num_instructions_to_generate=30,
        batch_size=8 if batched else 0,
        batch_num_workers=10 if batched else None,
    )
    with resources.as_file(resources.files(FULL_PIPELINES_PACKAGE).joinpath("freeform_skills.yaml")) as path:
        pipe = Pipeline.from_file(ctx, str(path))
    cpu0, started = time.process_time(), time.perf_counter()
    generated = 0
    for leaf in range(args.sdg_worker_leaves):
        generated += len(pipe.generate(Dataset.from_list(sdg_seeds(leaf, 5))))
    print(
        json.dumps(
            {
                "wall": time.perf_counter() - started,
                "cpu": time.process_time() - cpu0,
                "samples": generated,
                "version": metadata.version("instructlab-sdg"),
            }
        )
    )


def sdg_run(server: "Server", python: str, *, mode: str, leaves: int) -> dict:
    def work():
        command = [python, __file__, "--sdg-worker", server.url, "--sdg-mode", mode, "--sdg-worker-leaves", str(leaves)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"instructlab-sdg failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    return measure(server, work, count_prompts=True)


def sdg_available(python: str) -> str | None:
    """None when `python` can run instructlab-sdg, else why not."""
    if not os.path.exists(python):
        return f"{python} not found (see bench/RESULTS.md for how it was installed)"
    probe = "import importlib.metadata as m; print(m.version('instructlab-sdg'))"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else done.stderr.strip().splitlines()[-1]


# --- the taxonomy ---------------------------------------------------------------------------------------

QNA = """\
version: 3
task_description: >-
  Bench skill {leaf}: writing a short, plain explanation of a concept for a curious reader.
created_by: labweb-bench
seed_examples:
{seeds}
"""


def write_taxonomy(root: Path, leaves: int) -> None:
    for leaf in range(leaves):
        folder = root / "compositional_skills" / "bench" / f"skill_{leaf:02d}"
        folder.mkdir(parents=True)
        seeds = "\n".join(
            f"  - question: Explain concept {leaf}-{index} in two sentences.\n"
            f"    answer: >-\n      Concept {leaf}-{index} is a bench fixture. It exists to be explained briefly."
            for index in range(5)
        )
        (folder / "qna.yaml").write_text(QNA.format(leaf=leaf, seeds=seeds))
        (folder / "attribution.txt").write_text(
            "Title of work: bench\nLink to work: -\nRevision: -\n"
            "License of the work: Apache-2.0\nCreator names: bench\n"
        )


# --- running and reporting ------------------------------------------------------------------------------


def workers_row(args, server: "Server", user, pg: "PgSessions", teacher, concurrency: int, threads: int):
    """The run through `args.processes` real workers, with the bare client's baseline beside it."""
    work, check, stop = labweb_workers(
        teacher=teacher, user=user, samples_per_leaf=args.samples_per_leaf, seed=1000 + concurrency,
        processes=args.processes, threads=threads, expected_samples=args.leaves * args.samples_per_leaf,
        database=args.database, logs=args.logs, pool=args.pool,
    )  # fmt: skip
    try:
        with pg:
            row = check(measure(server, work))
    finally:
        stop()
    row.update(pg_opened=pg.opened, pg_peak=pg.peak, logged_errors=[], workers=threads, machine_ms=row["machine_ms"])
    base = measure(server, baseline(server.url, calls=row["calls"], concurrency=concurrency, warm=True))
    base, row = derive(base, concurrency, args.latency), derive(row, concurrency, args.latency)
    print(f"C={concurrency}: labweb {row['rate']:.1f} calls/s, baseline {base['rate']:.1f} calls/s", flush=True)
    pooled = f", pools of {args.pool}" if args.pool else ""
    name = f"C={concurrency} labweb: {args.processes} Celery workers x {threads} threads{pooled}"
    if os.environ.get("BENCH_TIMELINE"):
        begin = row["clock"][0]
        for second in range(int(row["wall"]) + 1):
            low, high = begin + second, begin + second + 1
            held = sum(max(0.0, min(e, high) - max(s, low)) for s, e in row["spans"])
            print(f"  t={second:3d}s  mean in flight {held:5.1f}")
    return name, row, base


def run_all(args, server: "Server", user, pg: PgSessions, errors: LoggedErrors) -> list[tuple[str, dict, dict]]:
    import openai  # noqa: F401 - a worker process imports it once, not inside the first measured run

    from generation.services.teachers import teacher_create

    rows = []
    for concurrency in args.concurrency:
        workers = args.workers or concurrency
        teacher = teacher_create(
            user=user, name=f"bench-c{concurrency}", base_url=server.url, model=MODEL, max_concurrency=concurrency
        )
        if args.processes:
            name, row, base = workers_row(args, server, user, pg, teacher, concurrency, workers)
            rows += [(f"C={concurrency} baseline: AsyncOpenAI + semaphore", base, base), (name, row, base)]
            continue
        work, check = labweb(
            teacher=teacher,
            user=user,
            samples_per_leaf=args.samples_per_leaf,
            seed=1000 + concurrency,
            workers=workers,
            expected_samples=args.leaves * args.samples_per_leaf,
            warm=args.warm,
        )
        errors.messages.clear()
        with pg:
            row = check(measure(server, work))
        row.update(pg_opened=pg.opened, pg_peak=pg.peak, logged_errors=list(errors.messages), workers=workers)
        base = measure(server, baseline(server.url, calls=row["calls"], concurrency=concurrency, warm=args.warm))
        base, row = derive(base, concurrency, args.latency), derive(row, concurrency, args.latency)
        rows.append((f"C={concurrency} baseline: AsyncOpenAI + semaphore", base, base))
        threads = f"{workers} {'' if args.warm else 'cold '}threads"
        rows.append((f"C={concurrency} labweb: item_process on {threads}", row, base))
        print(f"C={concurrency}: labweb {row['rate']:.1f} calls/s, baseline {base['rate']:.1f} calls/s", flush=True)
    if args.sdg_missing is None:
        for mode, leaves in zip(("one prompt per request", "batched prompts"), args.sdg_leaves, strict=True):
            row = sdg_run(server, args.sdg_python, mode=mode.split()[0], leaves=leaves)
            print(f"instructlab-sdg, {mode}: {row['rate']:.1f} completions/s", flush=True)
            for concurrency in args.concurrency:
                base = next(b for name, b, _ in rows if name == f"C={concurrency} baseline: AsyncOpenAI + semaphore")
                rows.append((f"C={concurrency} instructlab-sdg, {mode}", derive(row, concurrency, args.latency), base))
    order = {c: i for i, c in enumerate(args.concurrency)}
    return sorted(rows, key=lambda r: order[int(r[0].split()[0][2:])])


def table(rows: list[tuple[str, dict, dict]]) -> str:
    columns = [
        ("what", 55),
        ("calls", 5),
        ("wall s", 6),
        ("calls/s", 7),
        ("vs baseline", 11),
        ("util", 5),
        ("steady util", 11),
        ("max in flight", 13),
        ("overhead ms", 11),
        ("steady ms", 9),
        ("beyond baseline ms", 18),
        ("cpu ms", 6),
        ("server cpu ms", 13),
        ("machine cpu ms", 14),
    ]
    lines = [
        "| " + " | ".join(f"{name:{'<' if i == 0 else '>'}{width}}" for i, (name, width) in enumerate(columns)) + " |",
        "|"
        + "|".join(("-" * (width + 1) + ":") if i else "-" * (width + 2) for i, (_, width) in enumerate(columns))
        + "|",
    ]
    for name, row, base in rows:
        cells = [
            name,
            str(row["calls"]),
            f"{row['wall']:.2f}",
            f"{row['rate']:.1f}",
            f"{row['rate'] / base['rate']:.2f}x",
            f"{row['utilisation']:.1%}",
            f"{row['steady_utilisation']:.1%}" if "steady_utilisation" in row else "-",
            str(row["max_in_flight"]),
            f"{row['overhead_ms']:.2f}",
            f"{row['steady_ms']:.2f}" if "steady_ms" in row else "-",
            f"{row['overhead_ms'] - base['overhead_ms']:.2f}" if row is not base else "-",
            f"{row['cpu_ms']:.2f}",
            f"{row['server_cpu_ms']:.2f}",
            "-" if row["machine_ms"] is None else f"{row['machine_ms']:.2f}",
        ]
        lines.append(
            "| "
            + " | ".join(
                f"{c:{'<' if i == 0 else '>'}{w}}" for i, (c, (_, w)) in enumerate(zip(cells, columns, strict=True))
            )
            + " |"
        )
    return "\n".join(lines)


def per_kept_table(rows: list[tuple[str, dict, dict]]) -> str:
    """Calls and teacher tokens (words, as the scripted server counts them) per kept sample, once per way of
    running (instructlab-sdg's rows repeat for every C)."""
    lines = [
        "| what | kept | calls | calls per kept | floor | prompt words per kept | completion words per kept |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    seen = set()
    for name, row, _ in rows:
        label = name.split(" ", 1)[1] if "version" in row else name
        if not row.get("samples") or label in seen:
            continue
        seen.add(label)
        kept = row["samples"]
        # One question judge, one response, one pair judge a kept sample, and an item's generating call.
        floor = f"{3 + row['items'] / kept:.2f}" if "items" in row else "-"
        lines.append(
            f"| {label} | {kept} | {row['calls']} | {row['calls'] / kept:.2f} | {floor} | "
            f"{row['prompt_words'] / kept:.0f} | {row['completion_words'] / kept:.0f} |"
        )
    return "\n".join(lines)


def report(args, rows, database: str, load: tuple[str, str]) -> None:
    print()
    print(
        f"teacher latency {args.latency * 1000:.0f} ms; {args.leaves} compositional_skills leaves x 5 seeds, "
        f"{args.samples_per_leaf} samples per leaf; {database}; {os.cpu_count()} CPUs; "
        f"load average before {load[0]}, after {load[1]}"
    )
    print(table(rows))
    print()
    judges = (
        f"LabWeb's question judge rejects about 1 in {args.reject_questions}"
        if args.reject_questions
        else ("every judge accepts")
    )
    print(f"Per kept sample ({judges}; instructlab-sdg's judges always accept):")
    print(per_kept_table(rows))
    print()
    print(DEFINITIONS)
    print()
    for name, row, _ in rows:
        if "items" in row:
            print(
                f"{name}: {row['items']} items {row['outcomes']}, {row['samples']} samples, run {row['run_status']}"
                f"{'' if row['complete'] else ' (INCOMPLETE)'}; PostgreSQL connections opened {row['pg_opened']}, "
                f"at most {row['pg_peak']} open; {row['system_share']:.0%} of the bench's CPU in the kernel; "
                f"{len(row['logged_errors'])} errors logged by asyncio"
                + (f" (first: {row['logged_errors'][0]})" if row["logged_errors"] else "")
                + (f"; {row['crashes']} items crashed: {row['crash_kinds']}" if row["crashes"] else "")
            )
        elif "version" in row and name.startswith(f"C={args.concurrency[0]} "):
            print(
                f"{name.split(' ', 1)[1]}: instructlab-sdg {row['version']}, {row['requests']} requests carrying "
                f"{row['calls']} completions (calls here), {row['samples']} samples kept"
            )
        elif "version" not in row:
            print(f"{name}: {row['system_share']:.0%} of the bench's CPU in the kernel")
        if "idle_ms" in row:
            start, middle, end = row["idle_ms"]
            print(
                f"    idle slot time per call: {start:.2f} ms up to the middle 80% of calls (ramp-up), {middle:.2f} ms "
                f"in it, {end:.2f} ms after it (drain)"
            )
    if args.sdg_missing:
        print(f"instructlab-sdg: not measured: {args.sdg_missing}")
    for name, row, base in rows:
        if "items" in row:
            # The orchestration overhead is what LabWeb adds to the bare client's slot time: the client's own
            # HTTP work and a finite run's ramp-up and drain are in the baseline too.
            beyond = row["overhead_ms"] - base["overhead_ms"]
            steady = row.get("steady_ms", float("nan")) - base.get("steady_ms", float("nan"))
            print(
                f"target {name.split()[0]}: utilisation >= 90% {'met' if row['utilisation'] >= 0.9 else 'MISSED'} "
                f"({row['utilisation']:.1%}); orchestration overhead < 2 ms/call {'met' if beyond < 2 else 'MISSED'} "
                f"({beyond:.2f} ms beyond the baseline over the whole run, {steady:.2f} ms in the steady middle; "
                f"{row['overhead_ms']:.2f} ms of slot time in all, against the baseline's {base['overhead_ms']:.2f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument(
        "--cold",
        dest="warm",
        action="store_false",
        help="start the clock before the first teacher call of the process and the worker threads' database "
        "connections (by default both sides make one call first, as a worker that has served a run has)",
    )
    parser.add_argument("--leaves", type=int, default=40)
    parser.add_argument("--samples-per-leaf", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0, help="worker threads (default: C)")
    parser.add_argument("--processes", type=int, default=0, help="run through this many real Celery workers")
    parser.add_argument("--pool", type=int, default=0, help="the workers' DATABASE_POOL_SIZE (0: none)")
    parser.add_argument(
        "--reject-questions",
        type=int,
        default=0,
        metavar="N",
        help="LabWeb's question judge says no to about one question in N (2: half); instructlab-sdg's judges accept",
    )
    parser.add_argument("--no-sdg", action="store_true")
    parser.add_argument("--sdg-python", default=SDG_PYTHON)
    parser.add_argument("--sdg-leaves", type=int, nargs=2, default=[1, 2], metavar=("ONE_PER_REQUEST", "BATCHED"))
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--sdg-worker", help=argparse.SUPPRESS)
    parser.add_argument("--sdg-mode", help=argparse.SUPPRESS)
    parser.add_argument("--sdg-worker-leaves", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sdg_worker:
        return sdg_worker(args)

    logging.disable(logging.WARNING)
    errors = LoggedErrors()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(errors)
    asyncio_logger.propagate = False
    load = [Path("/proc/loadavg").read_text().split()[0]]
    server = Server(args.latency, args.reject_questions)  # forked before Django, its threads or its connections exist
    args.sdg_missing = "skipped (--no-sdg)" if args.no_sdg else sdg_available(args.sdg_python)

    import tempfile

    import django
    from django.db import connection

    django.setup()
    # Not pytest's test_labweb: the test suite may run beside the bench, which ends by closing every
    # connection to its own database.
    # Named after DATABASE_URL's database, so that benches on two databases of one server do not collide.
    connection.settings_dict["TEST"]["NAME"] = f"{TEST_DATABASE}_{connection.settings_dict['NAME']}"
    try:
        with test_database() as dbname, tempfile.TemporaryDirectory() as folder:
            from django.contrib.auth.models import User

            from curation.models import Leaf
            from curation.services import ImportSource, taxonomy_import

            write_taxonomy(Path(folder), args.leaves)
            user = User.objects.create(username="bench")
            record = taxonomy_import(source=ImportSource.directory(folder), user=user, from_shell=True)
            assert Leaf.objects.filter(is_valid=True).count() == args.leaves, (record.status, record.problems[:3])
            pg = PgSessions(dbname)
            args.database, args.logs = dbname, Path(os.environ.get("BENCH_LOGS") or folder)
            if args.processes:
                import redis
                from django.conf import settings as django_settings

                redis.Redis.from_url(django_settings.CELERY_BROKER_URL).flushdb()
            try:
                rows = run_all(args, server, user, pg, errors)
            finally:
                # Connections that finished threads left open would block DROP DATABASE.
                connection.close()
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
            settings = connection.settings_dict
            database = f"PostgreSQL at {settings['HOST']}:{settings['PORT']} (max_connections {pg.max_connections})"
    finally:
        server.close()
    load.append(Path("/proc/loadavg").read_text().split()[0])
    report(args, rows, database, tuple(load))
    if args.json:
        payload = [{"name": name, **{k: v for k, v in row.items() if k != "spans"}} for name, row, _ in rows]
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str))


if __name__ == "__main__":
    main()
