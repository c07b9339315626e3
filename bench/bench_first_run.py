"""The README's first run end to end, as a user does it, each step's wall time and CPU time.

A fresh SQLite database in a temporary folder (`LABWEB_VAR_DIR`, the embedded defaults: no DATABASE_URL),
`manage.py migrate` and `manage.py labweb_demo`, the two Celery workers exactly as `scripts/run` starts them,
then, through the Django test client signed in with a real session (the web server's code, without its socket):
Generation -> New run of the demo on the embedded teacher (2 samples a leaf), every sample approved through the
review API, a phased dataset built from the run, Train on it, and a question put to the last checkpoint.

Run: .venv/bin/python bench/bench_first_run.py [--threads 8] [--baseline-threads 4] [--keep]
REDIS_URL must name a Redis database nobody else uses: the bench empties it first (stale tasks of an earlier run
would be taken by its workers). `--baseline-threads N` runs the generation step again afterwards with the
generation worker at N threads (a new run with its own seed, on the same database), for a ratio measured in the
same run. CPU seconds are those of every process involved (workers and their torchrun trainers, the bench's
own requests), which a loaded machine inflates far less than wall time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "first-run-bench-7f3a"
# The figures this bench compares with: bench/RESULTS.md and the README before this bench.
BEFORE = {"generation": 216.3, "training": 27 * 60}
QUESTION = "Write a haiku about the moon."


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and of every descendant, live or reaped."""
    total, seen = 0.0, set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


def own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


class Clock:
    """Each step's wall and CPU seconds (the workers' trees, the bench's own children and itself)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, str]] = []
        self.workers: list[int] = []

    def cpu(self) -> float:
        children = psutil.Process().cpu_times()
        return tree_cpu(self.workers) + own_cpu() + children.children_user + children.children_system

    def step(self, name: str, fn, *args, **kwargs):
        started, cpu = time.perf_counter(), self.cpu()
        result = fn(*args, **kwargs)
        wall, used = time.perf_counter() - started, self.cpu() - cpu
        note = result.pop("note", "") if isinstance(result, dict) else ""
        self.rows.append((name, wall, used, note))
        print(f"  {name}: {wall:.1f} s wall, {used:.1f} s CPU  {note}", flush=True)
        return result


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "python"), "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def start_workers(env: dict, var: Path, threads: int) -> list[subprocess.Popen]:
    """scripts/run's two workers: generation and training on `threads` threads, and default with beat."""
    celery = str(BIN / "celery")
    work = subprocess.Popen(
        [celery, "-A", "labweb", "worker", "-n", "work@%h", "-Q", "generation,training", "-P", "threads"]
        + ["--concurrency", str(threads), "--loglevel", "INFO"],
        cwd=REPO,
        env=env,
        stdout=(var / "celery.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    periodic = subprocess.Popen(
        [celery, "-A", "labweb", "worker", "-n", "periodic@%h", "-Q", "default", "-P", "threads", "--concurrency", "2"]
        + ["-B", "--schedule", str(var / "celerybeat-schedule"), "--loglevel", "INFO"],
        cwd=REPO,
        env=env,
        stdout=(var / "celery-periodic.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    for log in ("celery.log", "celery-periodic.log"):
        while "ready." not in (var / log).read_text(errors="replace"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in (work, periodic)):
                raise SystemExit(f"The workers did not start; see {var / log}")
            time.sleep(0.2)
    return [work, periodic]


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for process in workers:
        process.terminate()
    for process in workers:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def wait(fetch, done, *, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not finish in {timeout:.0f} s: {json.dumps(value, default=str)[:2000]}")
        time.sleep(every)


def ok(response, *codes: int):
    if response.status_code not in (codes or (200,)):
        raise SystemExit(
            f"{response.request['REQUEST_METHOD']} {response.request['PATH_INFO']}: "
            f"{response.status_code} {response.content[:1000]!r}"
        )
    return response


def generation(client, teacher: int) -> dict:
    run = ok(
        client.post(
            "/api/runs/", {"teacher": teacher, "scope": "all", "samples_per_leaf": 2}, content_type="application/json"
        ),
        201,
    ).json()
    detail = wait(
        lambda: ok(client.get(f"/api/runs/{run['id']}/")).json(),
        lambda d: not d["is_active"],
        timeout=3600,
        what="the generation run",
    )
    progress = detail["progress"]
    stats = progress["teacher"]
    return {
        "run": run["id"],
        "status": detail["status"],
        "kept": progress["kept"],
        "target": progress["target"],
        "stats": stats,
        "note": f"run {detail['status']}, {progress['kept']} of {progress['target']} samples kept, teacher {stats}",
    }


def approve(client, run: int) -> dict:
    items = ok(client.get("/api/review/items/", {"run": run, "state": "pending"})).json()["results"]
    for item in items:
        etag = ok(client.get(f"/api/review/items/{item['id']}/"))["ETag"]
        ok(
            client.post(
                f"/api/review/items/{item['id']}/decide/",
                {"action": "approve"},
                content_type="application/json",
                HTTP_IF_MATCH=etag,
            )
        )
    return {"approved": len(items), "note": f"{len(items)} approved"}


def dataset(client, run: int) -> dict:
    made = ok(
        client.post(
            "/api/datasets/", {"name": "first run", "plan": "phased", "run": run}, content_type="application/json"
        ),
        201,
    ).json()
    built = wait(
        lambda: ok(client.get(f"/api/datasets/{made['id']}/")).json(),
        lambda d: d["status"] not in ("queued", "running"),
        timeout=600,
        what="the dataset build",
    )
    if built["status"] != "succeeded":
        raise SystemExit(f"The dataset build {built['status']}: {built.get('error')}")
    return {"dataset": made["id"], "note": f"{built['samples']} samples, {built['tokens']} tokens"}


def training(client, dataset_id: int, storage: Path) -> dict:
    ok(client.post(f"/training/datasets/{dataset_id}/train/"), 302)
    job = ok(client.get("/api/training-jobs/")).json()["results"][0]
    detail = wait(
        lambda: ok(client.get(f"/api/training-jobs/{job['id']}/")).json(),
        lambda d: d["status"] not in ("queued", "running"),
        timeout=7200,
        what="the training job",
        every=2,
    )
    if detail["status"] != "succeeded":
        raise SystemExit(f"The training job {detail['status']}: {detail.get('error')}")
    metrics = ok(client.get(f"/api/training-jobs/{job['id']}/metrics/")).json()
    phases = []
    for phase in detail["phases"]:
        mine = [m for m in metrics if m["phase"] == phase["id"]] if isinstance(metrics, list) else []
        losses = [m["loss"] for m in mine]
        rates = sorted(m["tokens_per_second"] for m in mine)
        seconds = _seconds(phase["started_at"], phase["finished_at"])
        phases.append(
            f"{phase['name']}: {phase['step']} steps in {seconds:.0f} s"
            + (
                f", loss {losses[0]:.2f} -> {losses[-1]:.2f}, median {rates[len(rates) // 2]:.0f} tokens/s"
                if mine
                else ""
            )
        )
    size = sum(f.stat().st_size for f in storage.rglob("*") if f.is_file())
    checkpoints = detail["checkpoints"]
    return {
        "checkpoint": max(checkpoints, key=lambda c: (c["phase"], c["step"]))["id"],
        "note": f"{len(checkpoints)} checkpoints; {'; '.join(phases)}; training storage {size / 1e9:.2f} GB",
    }


def _seconds(start: str | None, end: str | None) -> float:
    from django.utils.dateparse import parse_datetime

    if not (start and end):
        return float("nan")
    return (parse_datetime(end) - parse_datetime(start)).total_seconds()


def ask(client, checkpoint: int) -> dict:
    from training.models import CheckpointPrompt

    ok(client.post(f"/training/checkpoints/{checkpoint}/", {"prompt": QUESTION}), 200, 302)
    asked = wait(
        lambda: CheckpointPrompt.objects.filter(checkpoint_id=checkpoint).values().first(),
        lambda a: a and a["status"] not in ("queued", "running"),
        timeout=600,
        what="the question",
    )
    if asked["status"] != "succeeded":
        raise SystemExit(f"The checkpoint did not answer: {asked['error']}")
    return {"note": f"answered in {asked['seconds']} s on the worker: {asked['answer'][:80]!r}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=8, help="the generation worker's threads (scripts/run's)")
    parser.add_argument("--baseline-threads", type=int, default=0, help="generation again at N threads after")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    import redis

    var = Path(tempfile.mkdtemp(prefix="labweb-first-run-"))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "SECRET_KEY")}
    env.update(DEBUG="1", LABWEB_VAR_DIR=str(var), PYTHONUNBUFFERED="1")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    os.environ.clear()
    os.environ.update(env, DJANGO_SETTINGS_MODULE="labweb.settings")
    sys.path.insert(0, str(REPO))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"first run in {var}, {os.cpu_count()} CPUs, load average {' '.join(load)}, Redis {env['REDIS_URL']}")

    clock = Clock()
    workers: list[subprocess.Popen] = []
    started = time.perf_counter()
    try:
        clock.step("migrate", lambda: {"note": manage(env, "migrate", "--no-input", "-v0").strip()})
        clock.step(
            "labweb_demo", lambda: {"note": manage(env, "labweb_demo", "--password", PASSWORD).strip().splitlines()[-1]}
        )
        workers = clock.step("workers start", start_workers, env, var, args.threads)
        clock.workers = [w.pid for w in workers]

        import django

        django.setup()
        from django.test import Client

        client = Client(HTTP_HOST="127.0.0.1")
        if not client.login(username="admin", password=PASSWORD):
            raise SystemExit("Could not sign in as admin.")
        teachers = ok(client.get("/api/teachers/")).json()
        teachers = teachers.get("results", teachers) if isinstance(teachers, dict) else teachers
        teacher = next(t for t in teachers if t["backend"] == "local")["id"]

        run = clock.step("generation run (2 samples a leaf)", generation, client, teacher)
        clock.step("approve every sample (review API)", approve, client, run["run"])
        built = clock.step("build a phased dataset", dataset, client, run["run"])
        trained = clock.step(
            "train on it (the job, queued to done)", training, client, built["dataset"], var / "training"
        )
        clock.step("ask the last checkpoint", ask, client, trained["checkpoint"])
        total = time.perf_counter() - started
        if args.baseline_threads:
            stop_workers(workers)
            workers = clock.step(
                f"workers start ({args.baseline_threads} threads)", start_workers, env, var, args.baseline_threads
            )
            clock.workers = [w.pid for w in workers]
            clock.step(f"generation run again, {args.baseline_threads} worker threads", generation, client, teacher)
    finally:
        stop_workers(workers)
        load = Path("/proc/loadavg").read_text().split()[:3]
        if not args.keep:
            shutil.rmtree(var, ignore_errors=True)
    print(f"\nthe first run, migrate to answer: {total:.0f} s; load average at the end {' '.join(load)}")
    print("| step | wall s | CPU s | vs before | |\n|---|--:|--:|--:|---|")
    rows = {name: (wall, cpu) for name, wall, cpu, _ in clock.rows}
    for name, wall, cpu, note in clock.rows:
        before = (
            BEFORE["generation"]
            if name.startswith("generation run (")
            else (BEFORE["training"] if name.startswith("train on it") else None)
        )
        ratio = f"{before / wall:.2f}x" if before else ""
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {ratio} | {note} |")
    base = [r for r in clock.rows if r[0].startswith("generation run again")]
    if base:
        wall, cpu = rows["generation run (2 samples a leaf)"]
        print(
            f"\ngeneration at {args.threads} threads against {args.baseline_threads}: "
            f"{base[0][1] / wall:.2f}x the wall time, {base[0][2] / cpu:.2f}x the CPU"
        )
    print(
        f"(vs before: {BEFORE['generation']:.0f} s for the generation run on a quiet box, bench/RESULTS.md; "
        f"{BEFORE['training'] / 60:.0f} min for the job under a load of 10-16, the README)"
    )


if __name__ == "__main__":
    sys.exit(main())
