"""A Merlinite-scale run: planning 1.2 M samples over 100,000 work items, then the run page and the API with
a million samples.

Run: .venv/bin/python bench/bench_generation_scale.py [--leaves 20000] [--samples 1000000] [--runs 7]
(PostgreSQL from DATABASE_URL, as for every bench; about 3 minutes and 1.5 GB of database on the 2-core box.)

1. Planning: `--leaves` skills leaves of 5 seed examples each are inserted with bulk_create (what planning reads:
   the leaf, its seeds, its documents), then `run_create` plans the whole taxonomy at 60 samples a leaf: one
   work item per seed, 1.2 M samples at 20,000 leaves.
2. The run in mid-flight: 90% of its items done with the counters a worker publishes, 40 running, a few
   hundred failed, the rest pending; `--samples` samples COPYed in, spread over the done items.
3. Server time of each read, best and median of `--runs` through the Django test Client (middleware,
   session, templates or DRF; no network), signed in as an operator, after one warm-up request each. The reads
   sum the run's counters (generation/services/counters.py); mid_flight writes the items by hand, so the
   counters are recounted from them first (`manage.py generation_recount`), and that recount is timed too.
Target: every read under 100 ms.
"""

import argparse
import functools
import hashlib
import json
import statistics
import time

from _django import test_database

TARGET_MS = 100
SEEDS = 5
SAMPLES_PER_LEAF = 60


def leaf_path(i: int) -> str:
    return f"compositional_skills/area_{i % 50}/topic_{(i // 50) % 20}/leaf_{i}"


def add_leaves(count: int) -> None:
    from curation.models import Leaf, SeedExample

    for start in range(0, count, 5000):
        leaves = Leaf.objects.bulk_create(
            [
                Leaf(
                    path=leaf_path(i),
                    kind="compositional_skills",
                    version=3,
                    created_by="bench",
                    is_valid=True,
                    task_description=f"Writing about topic {i}.",
                    content_hash=hashlib.sha256(leaf_path(i).encode()).hexdigest(),
                )
                for i in range(start, min(count, start + 5000))
            ]
        )
        SeedExample.objects.bulk_create(
            [
                SeedExample(leaf=leaf, position=n, question=f"Explain idea {n} of {leaf.path}.", answer="An answer.")
                for leaf in leaves
                for n in range(SEEDS)
            ],
            batch_size=5000,
        )


def mid_flight(run, samples: int) -> dict:
    """Put the run in mid-flight: item states and counters, and `samples` samples over the done items."""
    from django.db import connection

    from generation.models import WorkItem

    counts = json.dumps(
        {
            "questions.generated": 9,
            "question_judge.accepted": 8,
            "question_judge.rejected": 1,
            "response.generated": 8,
            "pair_judge.accepted": 7,
            "pair_judge.rejected": 1,
        }
    )
    stats = json.dumps(
        {
            "calls": 25,
            "cached": 0,
            "retries": 0,
            "errors": 0,
            "prompt_tokens": 9000,
            "completion_tokens": 2500,
            "seconds": 11.5,
        }
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH numbered AS (SELECT id, row_number() OVER (ORDER BY id) AS n, count(*) OVER () AS total
                              FROM generation_workitem WHERE run_id = %s)
            UPDATE generation_workitem w SET
              state = CASE WHEN n <= total * 0.9 THEN 'done' WHEN n <= total * 0.9 + 300 THEN 'failed'
                           WHEN n <= total * 0.9 + 340 THEN 'running' ELSE 'pending' END,
              counts = CASE WHEN n <= total * 0.9 + 340 THEN %s::jsonb ELSE '{}'::jsonb END,
              stats = CASE WHEN n <= total * 0.9 + 340 THEN %s::jsonb ELSE '{}'::jsonb END,
              error = CASE WHEN n > total * 0.9 AND n <= total * 0.9 + 300
                           THEN 'The teacher answered HTTP 400: this model does not accept that prompt' ELSE '' END,
              lease_owner = CASE WHEN n > total * 0.9 + 300 AND n <= total * 0.9 + 340 THEN 'bench@host' ELSE '' END,
              lease_until = CASE WHEN n > total * 0.9 + 300 AND n <= total * 0.9 + 340
                                 THEN now() + interval '1 hour' END,
              queued_at = CASE WHEN n > total * 0.9 + 340 THEN now() END,
              attempts = CASE WHEN n <= total * 0.9 + 340 THEN 1 ELSE 0 END
            FROM numbered WHERE w.id = numbered.id
            """,
            [run.pk, counts, stats],
        )
        done = WorkItem.objects.filter(run=run, state="done").count()
        per_item = max(1, samples // done)
        cursor.execute(
            """
            UPDATE generation_workitem SET kept = LEAST(target, %s), finished_at = now()
            WHERE run_id = %s AND state IN ('done', 'failed')
            """,
            [per_item, run.pk],
        )
        # Samples as a worker writes them, made in the database: per_item a done item, up to `samples`.
        cursor.execute(
            """
            INSERT INTO generation_sample (idempotency_key, run_id, item_id, leaf_id, leaf_path, kind, question,
              response, seed_indices, scores, rationales, raw, prompts, steered_verdicts, teacher_id, teacher_model,
              created_at)
            SELECT w.run_id || ':' || w.id || ':' || k, w.run_id, w.id, w.leaf_id, w.leaf_path, 'skills',
              'Question ' || k || ' of ' || w.leaf_path || ': explain the idea in plain words?',
              'An answer of a few sentences, as a teacher writes one, number ' || k || '.',
              '[0, 1, 2]', '{"question": 1, "pair": 3}', '{"question": "Clear.", "pair": "Good."}', '{}',
              '["skills_questions@v1", "question_judge@v1", "skills_response@v1", "pair_judge@v1"]',
              '[]', r.teacher_id, 'bench-teacher', now()
            FROM generation_workitem w JOIN generation_generationrun r ON r.id = w.run_id,
                 generate_series(0, %s - 1) AS k
            WHERE w.run_id = %s AND w.state = 'done'
            LIMIT %s
            """,
            [per_item, run.pk, samples],
        )
        cursor.execute("SELECT count(*) FROM generation_sample WHERE run_id = %s", [run.pk])
        (written,) = cursor.fetchone()
    # What autovacuum does to a run's tables between a worker's updates: the reads see no dead rows.
    connection.ensure_connection()
    autocommit = connection.connection.autocommit
    connection.connection.autocommit = True
    try:
        with connection.connection.cursor() as raw:
            raw.execute("VACUUM ANALYZE generation_workitem")
            raw.execute("VACUUM ANALYZE generation_sample")
    finally:
        connection.connection.autocommit = autocommit
    return {"done": done, "samples": written}


def profiled(fn):
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(fn)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return result


def timed(fn, runs: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leaves", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print where planning's and each read's time goes")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection

    connection.settings_dict["TEST"]["NAME"] = f"test_bench_scale_{connection.settings_dict['NAME']}"
    with test_database():
        from unittest import mock

        from django.contrib.auth.models import Group, User
        from django.db.models import Sum
        from django.test import Client
        from django.urls import reverse

        from generation import selectors
        from generation.models import Teacher, WorkItem
        from generation.services.counters import counters_recount
        from generation.services.runs import run_create

        started = time.perf_counter()
        add_leaves(args.leaves)
        inserted = time.perf_counter() - started
        operator = User.objects.create_user("bench-operator", password="x")
        operator.groups.add(Group.objects.get_or_create(name="operator")[0])
        teacher = Teacher.objects.create(name="Bench", base_url="http://127.0.0.1:9/v1", model="bench-teacher")
        started = time.perf_counter()
        with mock.patch("generation.services.runs.send_task_on_commit"):
            plan = functools.partial(
                run_create, teacher=teacher, user=operator, scope="all", samples_per_leaf=SAMPLES_PER_LEAF
            )
            run = profiled(plan) if args.profile else plan()
        planning = time.perf_counter() - started
        items = WorkItem.objects.filter(run=run).count()
        target = WorkItem.objects.filter(run=run).aggregate(t=Sum("target"))["t"]
        run.refresh_from_db()
        print(
            f"{args.leaves:,} leaves x {SEEDS} seeds inserted in {inserted:.1f} s; run_create planned {items:,} work "
            f"items for {target:,} samples in {planning:.1f} s",
            flush=True,
        )
        started = time.perf_counter()
        state = mid_flight(run, args.samples)
        print(
            f"mid-flight: {state['done']:,} items done, {state['samples']:,} samples, in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        # mid_flight wrote the items by hand, behind the counters: the recount (manage.py generation_recount)
        # repairs them, as it would after any such change.
        started = time.perf_counter()
        repaired = counters_recount(run.pk)
        print(
            f"counters recounted from the items ({len(repaired):,} differed) in {time.perf_counter() - started:.1f} s; "
            f"a second recount finds {len(counters_recount(run.pk, repair=False))} differences",
            flush=True,
        )

        client = Client()
        client.force_login(operator)
        api = reverse("run-detail", args=[run.pk])
        reads = [
            (
                f"run_progress selector, first {selectors.LEAF_ROWS} leaves (pages, API)",
                lambda: selectors.run_progress(run, leaves=selectors.LEAF_ROWS),
            ),
            (f"run_progress selector, all {args.leaves:,} leaves", lambda: selectors.run_progress(run)),
            ("run page (HTML)", lambda: client.get(reverse("generation:run_detail", args=[run.pk]))),
            (
                "run page progress poll (htmx partial)",
                lambda: client.get(reverse("generation:run_progress", args=[run.pk]), headers={"HX-Request": "true"}),
            ),
            ("API run detail", lambda: client.get(api)),
            ("API leaves of the run, first page", lambda: client.get(reverse("run-leaves", args=[run.pk]))),
            ("API run list", lambda: client.get(reverse("run-list"))),
            ("run list page", lambda: client.get(reverse("generation:run_list"))),
            ("API work items of the run, first page", lambda: client.get(reverse("work-item-list"), {"run": run.pk})),
            (
                "API failed work items of the run",
                lambda: client.get(reverse("work-item-list"), {"run": run.pk, "state": "failed"}),
            ),
            ("API samples of the run, first page", lambda: client.get(reverse("sample-list"), {"run": run.pk})),
            ("samples page of the run", lambda: client.get(reverse("generation:sample_list"), {"run": run.pk})),
        ]
        print(
            f"\n| read ({items:,} work items, {state['samples']:,} samples) | best ms | median ms | status | target |"
        )
        print("|---|--:|--:|--:|---|")
        for name, read in reads:
            response = read()
            status = getattr(response, "status_code", "-")
            if args.profile:
                profiled(read)
            best, median = timed(read, args.runs)
            verdict = "met" if median < TARGET_MS else "MISSED"
            print(f"| {name} | {best:.1f} | {median:.1f} | {status} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
