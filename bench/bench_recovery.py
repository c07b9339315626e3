"""What killing a generation worker costs: extra wall time and extra teacher calls per kill -9.

Run: .venv/bin/python bench/bench_recovery.py [--samples 30] [--latency 0.2] [--kills 3] [--concurrency 8]
(PostgreSQL from DATABASE_URL as for every bench; Redis from REDIS_URL, whose database is emptied.)

The demo taxonomy, scope all, against tests/support/teacher_server.py (a fixed latency, judges that accept),
through real Celery workers: one generation worker (`-P threads -c C`) and one periodic worker running beat
(the reaper), as scripts/run starts them, with the settings' defaults (lease, reaper period). In the same run:
  baseline  the run with no kill;
  kills     the same run (a fresh sampling seed), its generation worker killed with SIGKILL `--kills` times,
            each time a new one started at once, which is killed in its turn after working 1/(kills+1) of the
            baseline's wall time.
extra s per kill = (kills wall - baseline wall - restart time of the new workers) / kills: the time a dead
worker's items stall beyond starting its replacement (the issue's target: 15 s at most). restart = from the
kill until the new worker says it is ready. re-asked = teacher requests whose exact body (model, messages,
seed) had been sent before, per kill, beside the requests in flight at each kill (held by the server, or
still on their way to it): the floor, since those answers never reached the worker; and beside the answers the
server had sent before the kill that were not in the response cache after it (received, or on their way, but
not yet committed when the worker died).
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only")

from _django import REPO, test_database  # noqa: E402


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def measure(args, database: str, server, teacher, user, kills: int, logs: Path) -> dict:
    from django.conf import settings

    from generation.models import GenerationRun, TeacherResponse
    from generation.sdg.teachers import Sampling
    from generation.sdg.teachers.cache import cache_key
    from generation.services.runs import run_create
    from tests.support.worker import Worker, worker_env

    script = server.script
    with script.lock:
        script.requests_sent.clear()
        script.exchanges.clear()
        script.requests = 0

    def key(body: dict) -> str:
        sampling = Sampling(body["temperature"], body["top_p"], body["max_tokens"], body["seed"])
        return cache_key(body["model"], body["messages"], sampling)

    env = worker_env(database, settings.CELERY_BROKER_URL, DEBUG="0", SECRET_KEY="bench-only")
    periodic = Worker(
        f"periodic{kills}", logs / f"periodic-{kills}.log", env, queues="default", concurrency=2, beat=True
    )
    workers = [periodic]

    def start(n: int) -> Worker:
        worker = Worker(f"gen{kills}-{n}", logs / f"gen-{kills}-{n}.log", env, queues="generation",
                        concurrency=args.concurrency)  # fmt: skip
        workers.append(worker)
        worker.wait_ready(120)
        return worker

    restarts, in_flight, unsaved, mark = [], [], [], 0
    try:
        periodic.wait_ready(120)
        worker = start(0)
        run = run_create(teacher=teacher, user=user, samples_per_leaf=args.samples)
        _wait(lambda: GenerationRun.objects.filter(pk=run.pk, started_at__isnull=False).exists(), 60, "the start")
        begun = time.monotonic()
        for n in range(1, kills + 1):
            # Each worker, the first or a replacement, works a share of the baseline's wall time before its kill.
            time.sleep(args.baseline / (kills + 1))
            states = dict(Counter(run.items.values_list("state", flat=True)))
            print(f"kill {n} after {time.monotonic() - begun:.1f} s: work items {states}", flush=True)
            with script.lock:
                held, arrived = script.in_flight, script.requests
                # Answered since the last kill (an answer lost at an earlier one was counted there).
                answered = {
                    key(script.requests_sent[e["number"] - 1])
                    for e in script.exchanges
                    if e["status"] == 200 and e["number"] > mark
                }
            os.killpg(worker.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            worker.process.wait()
            time.sleep(0.2)  # what the dead process had written to its sockets reaches the server
            with script.lock:
                # In flight: what the server held, and what it read from the dead process's sockets after.
                in_flight.append(held + script.requests - arrived)
                mark = script.requests  # what the dead process sent is its kill's; what comes next, the new worker's
            unsaved.append(
                len(answered - set(TeacherResponse.objects.filter(key__in=answered).values_list("key", flat=True)))
            )
            worker = start(n)
            restarts.append(time.monotonic() - killed)
        _wait(
            lambda: GenerationRun.objects.filter(pk=run.pk).exclude(status__in=["queued", "running"]).exists(),
            1800,
            "the run to finish",
        )
    finally:
        for each in workers:
            each.kill()
    run.refresh_from_db()
    asked = Counter(
        json.dumps([b.get("model"), b.get("messages"), b.get("seed")], sort_keys=True) for b in script.requests_sent
    )
    return {
        "status": run.status,
        "wall": (run.finished_at - run.started_at).total_seconds(),
        "calls": sum(asked.values()),
        "reasked": sum(count - 1 for count in asked.values()),
        "restarts": restarts,
        "in_flight": in_flight,
        "unsaved": unsaved,
        "samples": run.samples.count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30, help="samples per leaf")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with test_database() as database:
        import redis
        from django.conf import settings
        from django.contrib.auth.models import User

        from curation.services import ImportSource, taxonomy_import
        from generation.services.teachers import teacher_create
        from tests.support.sdg import DEMO
        from tests.support.teacher_server import TeacherServer

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        user = User.objects.create_user("bench")
        taxonomy_import(source=ImportSource.directory(DEMO), user=user, from_shell=True)
        logs = tempfile.mkdtemp(prefix="bench-recovery-")
        print("worker logs in", logs)
        with TeacherServer() as server:
            server.script.latency = args.latency
            teacher = teacher_create(
                user=user, name="scripted", base_url=server.url, model="scripted-teacher",
                max_concurrency=args.concurrency, timeout_seconds=30,
            )  # fmt: skip
            args.baseline = 0.0
            base = measure(args, database, server, teacher, user, 0, Path(logs))
            args.baseline = base["wall"]
            killed = measure(args, database, server, teacher, user, args.kills, Path(logs))
    k = args.kills
    restart = sum(killed["restarts"])
    extra = (killed["wall"] - base["wall"] - restart) / k
    print(
        f"lease {settings.LABWEB_WORK_LEASE_SECONDS} s, reaper every {settings.LABWEB_REAP_SECONDS:g} s, "
        f"C={args.concurrency}, latency {args.latency:g} s, {args.samples} samples per leaf"
    )
    print(
        "| run | status | wall s | samples | teacher calls | re-asked | in flight at kills "
        "| answered, not yet saved at kills | restarts s |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|---|")
    for name, row in (("baseline", base), (f"{k} kills", killed)):
        print(
            f"| {name} | {row['status']} | {row['wall']:.1f} | {row['samples']} | {row['calls']} | {row['reasked']} "
            f"| {', '.join(map(str, row['in_flight'])) or '-'} "
            f"| {', '.join(map(str, row['unsaved'])) or '-'} "
            f"| {', '.join(f'{r:.1f}' for r in row['restarts']) or '-'} |"
        )
    print(
        f"\nextra s per kill beyond restart: {extra:.1f} (target <= 15); "
        f"wall ratio {killed['wall'] / base['wall']:.2f}; "
        f"re-asked per kill: {killed['reasked'] / k:.1f} against {sum(killed['in_flight']) / k:.1f} in flight "
        f"and {sum(killed['unsaved']) / k:.1f} answered but not yet saved"
    )


if __name__ == "__main__":
    main()
