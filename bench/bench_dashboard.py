"""The operators' dashboard with 10,000 jobs in the database: it must answer in under 100 ms.

Run: .venv/bin/python bench/bench_dashboard.py [--jobs 10000] [--requests 30]

On a throw-away PostgreSQL test database: first the page with no job at all (the baseline, same run), then after
loading `--jobs` jobs: half generation runs (two work items each), 40% training jobs (two phases each), 10%
dataset builds; 2% of each kind failed with an error, 50 running and 50 queued in all, the rest succeeded or
cancelled. Server time is the Django handler's for a request through the test Client as an operator (every
middleware, session and role check; DEBUG off): fastest, median and p95 of `--requests` after 5 warm-up requests,
and the web process's own CPU time a request (time.process_time), which a loaded machine does not inflate. The workers'
inspection is cached between requests as in production (LABWEB_MONITOR_CACHE_SECONDS); its own cost, one
broadcast waiting LABWEB_MONITOR_TIMEOUT for replies and a second one that stops at as many replies, is measured
apart, against whatever workers share REDIS_URL: the cost one request per cache period pays.
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-bench-only-secret-key")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")

from _django import percentile, test_database, timings_ms  # noqa: E402


def load(total: int) -> dict[str, int]:
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.utils import timezone

    from generation.models import GenerationRun, Teacher, WorkItem
    from training.models import Dataset, TrainingJob, TrainingPhase

    rng = random.Random(16)
    now = timezone.now()
    user = User.objects.get(username="bench-operator")

    def status(i: int) -> str:
        if i % 50 == 0:
            return "failed"
        if i % 200 == 1:
            return "running"
        if i % 200 == 2:
            return "queued"
        return rng.choice(("succeeded", "succeeded", "succeeded", "cancelled"))

    def times(i: int, state: str) -> dict:
        created = now - timezone.timedelta(minutes=total - i)
        done = state in ("succeeded", "failed", "cancelled")
        return {
            "created_at": created,
            "started_at": created if state != "queued" else None,
            "finished_at": created + timezone.timedelta(minutes=1) if done else None,
            "error": f"Teacher answered 500 at item {i}: upstream overloaded" if state == "failed" else "",
        }

    runs, training, datasets = total // 2, total * 2 // 5, total - total // 2 - total * 2 // 5
    with transaction.atomic():
        teacher = Teacher.objects.create(name="bench", base_url="http://127.0.0.1:9/v1", model="m")
        made = GenerationRun.objects.bulk_create(
            [
                GenerationRun(
                    teacher=teacher, teacher_config={}, created_by=user, status=(s := status(i)), **times(i, s)
                )
                for i in range(runs)
            ],
            batch_size=2000,
        )
        WorkItem.objects.bulk_create(
            [
                WorkItem(
                    run=run,
                    leaf_path=f"compositional_skills/leaf_{n}",
                    leaf_hash="x",
                    kind="skills",
                    unit=f"seed {n}",
                    spec={},
                    target=5,
                    state="done" if run.status == "succeeded" or n == 0 else "pending",
                    kept=5,
                )  # fmt: skip
                for run in made
                for n in range(2)
            ],
            batch_size=5000,
        )
        jobs = TrainingJob.objects.bulk_create(
            [
                TrainingJob(
                    name=f"job {i}",
                    base_model="base",
                    output_dir=f"/tmp/job-{i}",
                    created_by=user,
                    status=(s := status(i)),
                    **times(i, s),
                )  # fmt: skip
                for i in range(training)
            ],
            batch_size=2000,
        )
        TrainingPhase.objects.bulk_create(
            [
                TrainingPhase(
                    job=job,
                    order=n,
                    name=f"phase {n}",
                    recipe="",
                    config={},
                    status=job.status,
                    step=12 * n,
                    total_steps=36,
                )  # fmt: skip
                for job in jobs
                for n in range(2)
            ],
            batch_size=5000,
        )
        Dataset.objects.bulk_create(
            [
                Dataset(
                    name=f"build {i}",
                    system_prompt="s",
                    tokenizer="t",
                    created_by=user,
                    status=(s := status(i)),
                    **times(i, s),
                )  # fmt: skip
                for i in range(datasets)
            ],
            batch_size=2000,
        )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"generation runs": runs, "training jobs": training, "dataset builds": datasets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()

    with test_database():
        from django.conf import settings
        from django.contrib.auth.models import Group, User
        from django.core.cache import cache
        from django.test import Client
        from django.test.utils import teardown_test_environment

        from labweb.monitor import checks

        # The test environment instruments every template render (a signal with a copy of the context for each
        # include) for assertions no bench makes: off, so the figures are a server's.
        teardown_test_environment()
        settings.LABWEB_MONITOR_CACHE_SECONDS = 3600  # the figures below are the page's; the broadcast is apart
        operator = User.objects.create_user("bench-operator")
        operator.groups.add(Group.objects.get_or_create(name="operator")[0])
        client = Client()
        client.force_login(operator)

        def page():
            response = client.get("/operations/")
            assert response.status_code == 200, response.status_code

        def live():
            response = client.get("/operations/", headers={"HX-Request": "true"})
            assert response.status_code == 200 and b"<html" not in response.content

        started = time.perf_counter()
        cache.delete(checks.CACHE_KEY)
        found = checks.workers()
        broadcast_ms = (time.perf_counter() - started) * 1000
        empty = {"page": timings_ms(page, requests=args.requests), "live": timings_ms(live, requests=args.requests)}
        started = time.perf_counter()
        counts = load(args.jobs)
        print(f"loaded {args.jobs:,} jobs ({counts}) in {time.perf_counter() - started:.0f} s")
        full = {"page": timings_ms(page, requests=args.requests), "live": timings_ms(live, requests=args.requests)}
        cpu_started = time.process_time()
        for _ in range(args.requests):
            page()
        cpu_ms = (time.process_time() - cpu_started) * 1000 / args.requests
        ready = timings_ms(lambda: client.get("/readyz"), requests=args.requests)
        load_average = os.getloadavg()[0]

        print(
            f"\nms: fastest / median / p95 of {args.requests}; "
            f"load average {load_average:.1f} on {os.cpu_count()} cores"
        )
        print(f"{'request':<40} {'empty':>20} {f'{args.jobs:,} jobs':>20} {'p50 vs empty':>13}  target p95 < 100")
        for name, label in (("page", "dashboard page (GET /operations/)"), ("live", "its live partial (htmx poll)")):
            e, f = empty[name], full[name]
            verdict = "met" if percentile(f, 0.95) < 100 else "MISSED"
            print(
                f"{label:<40} {e[0]:>6.1f} {percentile(e, 0.5):>6.1f} {percentile(e, 0.95):>6.1f} "
                f"{f[0]:>6.1f} {percentile(f, 0.5):>6.1f} {percentile(f, 0.95):>6.1f} "
                f"{percentile(f, 0.5) / percentile(e, 0.5):>12.2f}x  {verdict}"
            )
        print(
            f"dashboard page with {args.jobs:,} jobs, CPU time of this process a request: {cpu_ms:.1f} ms "
            "(what a request costs the web process whatever the machine's load; the database's share is apart)"
        )
        print(
            f"{'/readyz, workers cached':<40} {'':>20} "
            f"{ready[0]:>6.1f} {percentile(ready, 0.5):>6.1f} {percentile(ready, 0.95):>6.1f}"
        )
        print(
            f"the inspection ({len(found.workers)} workers answering): {broadcast_ms:.0f} ms "
            f"(timeout {settings.LABWEB_MONITOR_TIMEOUT} s), once per cache period"
        )


if __name__ == "__main__":
    main()
