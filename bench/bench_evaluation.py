"""Evaluation against a judge with a fixed latency: how busy the evaluation keeps the judge, per concurrency C.

Run: .venv/bin/python bench/bench_evaluation.py [--leaves 1000] [--seeds 5] [--latency 0.2] [--concurrency 16 32]
(PostgreSQL from DATABASE_URL as for every bench.)

1,000 skills leaves with 5 seed questions each; the model under test and its base answer on an OpenAI-compatible
server with no latency (the server backend), the judge is another with `--latency` seconds a call and
`max_concurrency` C. Both servers are tests/support/teacher_server.py, each in a child process of its own, so this
process's CPU is the evaluation's alone and the judge never waits on the model's server. For each C, in the same
run and against the same judge:
  baseline  one asyncio loop sending as many judge calls as the evaluation made, through one AsyncOpenAI client
            with a semaphore of C: the best an orchestrator on that client can do;
  labweb    evaluation_create + evaluation_run (the Celery task's body) on a fresh job: planning, answers,
            judgements and verdicts, everything saved to PostgreSQL as it comes.
util = judge calls / seconds / (C / latency): 1.0 is a judge that never waits for work. `job` divides by the
job's whole wall time (planning and verdicts included); `judging` by the time from the first judge call to the
last answer, as the judge saw it. The target is judging util >= 0.9. cpu/call: this process's CPU per judgement
(the model's answer, the judge's call, the writes); the baseline's makes only the judge's call. load: the
machine's 1-minute load average after the run (a loaded machine starves both sides).
"""

import argparse
import asyncio
import multiprocessing
import os
import sys
import time

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only")

from _django import REPO, test_database  # noqa: E402


def _serve(conn, latency: float) -> None:
    sys.path.insert(0, str(REPO))
    from tests.support.teacher_server import TeacherScript, TeacherServer

    judge_script = TeacherScript()
    judge_script.latency = latency
    spans: list[tuple[float, float]] = []
    judge = TeacherServer(judge_script)
    base = judge.httpd.RequestHandlerClass

    class Timed(base):
        def do_POST(self):
            started = time.time()
            try:
                super().do_POST()
            finally:
                with judge_script.lock:
                    spans.append((started, time.time()))

    judge.httpd.RequestHandlerClass = Timed
    with judge:
        conn.send(judge.url)
        while (command := conn.recv()) != "stop":
            with judge_script.lock:
                if command == "reset":
                    judge_script.requests = judge_script.max_in_flight = 0
                    judge_script.exchanges.clear()
                    spans.clear()
                    conn.send(None)
                else:
                    first = min((s for s, _ in spans), default=0.0)
                    last = max((e for _, e in spans), default=0.0)
                    conn.send({"requests": judge_script.requests, "max_in_flight": judge_script.max_in_flight,
                               "first": first, "last": last})  # fmt: skip


class Server:
    """A scripted server in a process of its own (the judge's replies never wait on the model's)."""

    def __init__(self, latency: float):
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(target=_serve, args=(child, latency), daemon=True)
        self.process.start()
        self.url = self.conn.recv()

    def ask(self, command: str):
        self.conn.send(command)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(10)


def make_taxonomy(leaves: int, seeds: int) -> None:
    from curation.models import Kind, Leaf, SeedExample

    made = Leaf.objects.bulk_create(
        Leaf(path=f"compositional_skills/bench/b{n // 100}/leaf{n}", kind=Kind.COMPOSITIONAL_SKILLS, version=3)
        for n in range(leaves)
    )
    SeedExample.objects.bulk_create(
        (
            SeedExample(leaf=leaf, position=s, question=f"Question {s} of {leaf.path}?", answer=f"answer {s} words")
            for leaf in made
            for s in range(seeds)
        ),
        batch_size=5000,
    )


async def baseline(url: str, calls: int, concurrency: int) -> float:
    from openai import AsyncOpenAI

    from evaluation.core.judge import judge_messages

    client = AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
    limit = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with limit:
            await client.chat.completions.create(
                model="judge", messages=judge_messages(question=f"q{n}", reference="r", answer="a"), temperature=0
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(calls)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leaves", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32])
    args = parser.parse_args()
    judge_server, model_server = Server(args.latency), Server(0.0)
    with test_database():
        from django.conf import settings

        from evaluation.models import Measurement
        from evaluation.services.jobs import evaluation_create
        from evaluation.services.runner import evaluation_run
        from generation.services.teachers import teacher_create

        settings.LABWEB_EVALUATION_SERVER_CONCURRENCY = 16
        make_taxonomy(args.leaves, args.seeds)
        print(f"{args.leaves} leaves x {args.seeds} seeds, judged for the model and its base; latency {args.latency} s")
        print(f"{'C':>4} {'calls':>6} {'baseline util':>14} {'job s':>7} {'job util':>9} {'judging util':>13} "
              f"{'vs baseline':>12} {'max in flight':>14} {'cpu/call':>9} {'baseline cpu/call':>18} "
              f"{'load':>5}")  # fmt: skip
        for c in args.concurrency:
            judge = teacher_create(
                user=None, name=f"judge {c}", base_url=judge_server.url, model="judge", max_concurrency=c
            )
            job = evaluation_create(
                user=None, model="good", base_model="plain", backend="server", server_url=model_server.url,
                judge=judge, start=False,
            )  # fmt: skip
            judge_server.ask("reset")
            cpu, started = time.process_time(), time.perf_counter()
            outcome = evaluation_run(job_id=job.pk)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            seen = judge_server.ask("stats")
            job.refresh_from_db()
            assert outcome == "done", job.error
            calls = Measurement.objects.filter(job=job, judged=True).count()
            assert calls == seen["requests"], (calls, seen)
            ideal = c / args.latency
            judging = seen["last"] - seen["first"]
            judge_server.ask("reset")
            base_cpu = time.process_time()
            base_wall = asyncio.run(baseline(judge_server.url, calls, c))
            base_cpu = time.process_time() - base_cpu
            base_util = calls / base_wall / ideal
            judging_util = calls / judging / ideal
            print(f"{c:>4} {calls:>6} {base_util:>14.3f} {wall:>7.1f} {calls / wall / ideal:>9.3f} "
                  f"{judging_util:>13.3f} {judging_util / base_util:>12.3f} {seen['max_in_flight']:>14} "
                  f"{cpu / calls * 1000:>7.2f}ms {base_cpu / calls * 1000:>16.2f}ms "
                  f"{os.getloadavg()[0]:>5.1f}")  # fmt: skip
    judge_server.close()
    model_server.close()


if __name__ == "__main__":
    main()
