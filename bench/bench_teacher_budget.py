"""The teacher budget shared in Redis against the per-process one: what a call costs, and how busy two worker
processes keep a teacher limited to C.

Run: .venv/bin/python bench/bench_teacher_budget.py [--concurrency 64] [--latency 0.2] [--seconds 20]
(Redis from REDIS_URL; no database.)

cost   One process, one event loop: `tasks` coroutines each take a slot and give it back at once, over and
       over, on a ProcessBudget and on a RedisBudget of C slots; wall and CPU time per acquire + release,
       uncontended (tasks = C/2) and contended (tasks = 2C).
util   The scripted teacher server (tests/support/teacher_server.py) in a child process with a fixed latency,
       and two client processes, each calling it through OpenAITeacher (the call path of a work item) from
       `callers` coroutines for `seconds`. The budget is one RedisBudget of C shared by both, or a
       ProcessBudget in each: C each (what `max_concurrency` meant per process before), or C/2 each (a static
       split). util = calls finished in the measuring window x latency / (C x window), the window being the
       run less its first 3 s; slots held = time calls spent inside a slot (sending, the server's answer) /
       (C x run), what the budget itself leaves idle; call s = the mean of that time a call (the latency
       plus what the loaded server and client add); max in flight is the server's own count over the whole
       run; cpu ms = the two client processes' CPU time per call.
fair   Fairness between runs on one RedisBudget of C: process 1 calls for a run "long" from 2C coroutines for
       `seconds`; halfway through, process 2 starts calling for a run "late" from C coroutines. late's share =
       its calls / both runs' calls finished from 1 s after it started to the end (a fair budget: 50%; first
       come, first served would leave it what the long run's waiting calls leave over).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
WARM = 3.0


def _budget(kind: str, key: str, limit: int):
    from generation.sdg.teachers import ProcessBudget
    from generation.sdg.teachers.shared import RedisBudget, redis_client

    if kind == "redis":
        return RedisBudget(redis_client(REDIS_URL), key, [limit], lease=5.0, renew=1.0)
    return ProcessBudget([limit])


# --- cost -----------------------------------------------------------------------------------------------------


def cost(kind: str, limit: int, tasks: int, total: int) -> tuple[float, float]:
    budget = _budget(kind, f"bench:budget:{uuid.uuid4().hex[:8]}", limit)

    async def main():
        async def worker(n: int):
            for _ in range(n):
                slot = await budget.acquire()
                await asyncio.sleep(0)
                budget.release(slot)

        await asyncio.gather(*(worker(total // tasks) for _ in range(tasks)))

    asyncio.run(main())  # warm: the pump thread, the script loaded
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(main())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if kind == "redis":
        budget.stop()
    ops = (total // tasks) * tasks
    return wall / ops * 1e6, cpu / ops * 1e6


# --- util -----------------------------------------------------------------------------------------------------


def _serve(conn, latency: float) -> None:
    from tests.support.teacher_server import TeacherServer

    with TeacherServer() as server:
        server.script.latency = latency
        conn.send(server.url)
        while (command := conn.recv()) != "stop":
            if command == "reset":
                with server.script.lock:
                    server.script.max_in_flight = server.script.in_flight
                    server.script.requests = 0
                    server.script.exchanges.clear()
                    server.script.requests_sent.clear()
                conn.send("ok")
            elif command == "stats":
                conn.send({"max_in_flight": server.script.max_in_flight, "requests": server.script.requests})


def client(args) -> None:
    """One worker process's calls (run as a child of this script)."""
    from generation.sdg.teachers import CallStats, OpenAITeacher, RetryPolicy, Sampling, call_share

    budget = _budget(args.budget, args.key, args.limit)
    teacher = OpenAITeacher(
        base_url=args.url, model="bench", max_concurrency=args.limit, budget=budget, retry=RetryPolicy(attempts=1)
    )
    hello = [{"role": "user", "content": "Say hello."}]
    done: list[float] = []
    stats = CallStats()

    async def main():
        await teacher.complete(hello, Sampling(seed=-1))  # warm: the client and its connection pool
        await asyncio.sleep(max(0.0, args.start - time.time()))
        cpu = time.process_time()
        end = args.start + args.seconds

        async def caller(n: int):
            call_share.set(args.share)
            seed = n * 1_000_000
            while time.time() < end:
                seed += 1
                await teacher.complete(hello, Sampling(seed=seed), stats)
                done.append(time.time())

        await asyncio.gather(*(caller(n) for n in range(args.callers)))
        return time.process_time() - cpu

    cpu = asyncio.run(main())
    since = args.window_start if args.window_start is not None else args.start + WARM
    window = [t for t in done if since <= t <= args.start + args.seconds]
    print(json.dumps({"calls": len(done), "window_calls": len(window), "cpu": cpu, "slot_seconds": stats.seconds}))


def util(url: str, server, *, budget: str, limit: int, per_process: int, callers: tuple[int, int], args) -> dict:
    server.send("reset")
    server.recv()
    key = f"bench:budget:{uuid.uuid4().hex[:8]}"
    start = time.time() + 4.0  # both processes started and warm
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--client", "--url", url, "--budget", budget, "--key", key]
            + ["--limit", str(per_process), "--callers", str(n), "--start", str(start), "--seconds", str(args.seconds)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for n in callers
    ]
    results = [json.loads(proc.communicate(timeout=args.seconds + 120)[0]) for proc in procs]
    server.send("stats")
    stats = server.recv()
    window = args.seconds - WARM
    calls = sum(r["window_calls"] for r in results)
    total = sum(r["calls"] for r in results)
    slot_seconds = sum(r["slot_seconds"] for r in results)
    return {
        "calls": total,
        "occupancy": slot_seconds / (limit * args.seconds),
        "call_s": slot_seconds / max(1, total),
        "util": calls * args.latency / (limit * window),
        "max_in_flight": stats["max_in_flight"],
        "cpu_ms": 1000 * sum(r["cpu"] for r in results) / max(1, sum(r["calls"] for r in results)),
    }


def fair(url: str, server, *, args) -> dict:
    server.send("reset")
    server.recv()
    c, key = args.concurrency, f"bench:budget:{uuid.uuid4().hex[:8]}"
    start = time.time() + 4.0
    half = args.seconds / 2
    plan = [("run:long", 2 * c, start, args.seconds), ("run:late", c, start + half, half)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--client", "--url", url, "--budget", "redis", "--key", key]
            + ["--limit", str(c), "--callers", str(n), "--start", str(begin), "--seconds", str(seconds)]
            + ["--share", share, "--window-start", str(start + half + 1.0)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for share, n, begin, seconds in plan
    ]
    long, late = (json.loads(proc.communicate(timeout=args.seconds + 120)[0]) for proc in procs)
    server.send("stats")
    stats = server.recv()
    window = half - 1.0
    both = long["window_calls"] + late["window_calls"]
    return {
        "long": long["window_calls"],
        "late": late["window_calls"],
        "late_share": late["window_calls"] / max(1, both),
        "util": both * args.latency / (c * window),
        "max_in_flight": stats["max_in_flight"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--only", choices=["cost", "util", "fair"])
    parser.add_argument("--client", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--budget")
    parser.add_argument("--key")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--callers", type=int)
    parser.add_argument("--start", type=float)
    parser.add_argument("--share", default="")
    parser.add_argument("--window-start", type=float)
    args = parser.parse_args()
    if args.client:
        return client(args)

    c = args.concurrency
    print(f"load average before: {os.getloadavg()[0]:.2f}; C={c}, latency {args.latency} s, {args.seconds} s a run")
    if args.only not in ("util", "fair"):
        print(
            "\n| cost of one acquire + release | tasks | process us wall | process us cpu | redis us wall "
            "| redis us cpu | redis / process (cpu) |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|")
        for label, tasks in (("uncontended", max(1, c // 2)), ("contended", 2 * c)):
            pw, pc = cost("process", c, tasks, args.ops)
            rw, rc = cost("redis", c, tasks, args.ops)
            print(f"| {label} | {tasks} | {pw:.1f} | {pc:.1f} | {rw:.1f} | {rc:.1f} | {rc / pc:.1f}x |")
    if args.only == "cost":
        return

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child, args.latency), daemon=True)
    server.start()
    url = parent.recv()
    if args.only == "fair":
        try:
            r = fair(url, parent, args=args)
        finally:
            parent.send("stop")
            server.join(5)
        print(
            "\n| runs on one shared budget of C | long run calls | late run calls | late run's share | util of "
            "C/latency | max in flight |\n|---|--:|--:|--:|--:|--:|\n"
            f"| long from 2C callers, late from C callers in another process, the last half |"
            f" {r['long']} | {r['late']} | {r['late_share']:.1%} | {r['util']:.1%} | {r['max_in_flight']} |"
        )
        return
    rows = [
        ("shared in Redis: C", "redis", c, (c, c)),
        ("shared in Redis: C", "redis", c, (c, c // 4)),
        ("per process: C each", "process", c, (c, c)),
        ("per process: C/2 each", "process", c // 2, (c, c)),
        ("per process: C/2 each", "process", c // 2, (c, c // 4)),
    ]
    print(
        "\n| budget | callers (proc 1 + 2) | calls | util of C/latency | slots held | call s | max in flight | over C? "
        "| client cpu ms a call |"
    )
    print("|---|---|--:|--:|--:|--:|--:|---|--:|")
    try:
        for label, kind, per_process, callers in rows:
            r = util(url, parent, budget=kind, limit=c, per_process=per_process, callers=callers, args=args)
            over = "yes" if r["max_in_flight"] > c else "no"
            print(
                f"| {label} | {callers[0]} + {callers[1]} | {r['calls']} | {r['util']:.1%} | {r['occupancy']:.1%} "
                f"| {r['call_s']:.3f} | {r['max_in_flight']} "
                f"| {over} | {r['cpu_ms']:.2f} |",
                flush=True,
            )
    finally:
        parent.send("stop")
        server.join(5)


if __name__ == "__main__":
    main()
