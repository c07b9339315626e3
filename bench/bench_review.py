"""Review at a million samples on PostgreSQL: queue pages, the review screen, bulk approve and undo, throughput.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/labweb_bench_review .venv/bin/python bench/bench_review.py
     [--samples 1000000] [--reload] [--requests 30] [--seconds 10] [--only lists,open,bulk,throughput]

The database is kept between runs (loading a million samples takes minutes); --reload loads it again. The load:
1,000 leaves (10 branches of 100), two runs with a teacher each, one work item per run and leaf, samples of
20-60-word questions and answers with scores and rationales as the skills pipeline writes them, 2% marked
near-duplicates; review items opened by `review_sync()` (as for samples written before review existed), then
`VACUUM ANALYZE`.

Server time is the Django handler's time for a request through the test Client (every middleware, the session
and the role check, no network); DATABASE_CONN_MAX_AGE=0, so each request opens a new database connection.
Each figure is the p95 of `--requests` requests after 5 warm-up requests. Throughput: two server processes
(the machine has two cores) share one port (SO_REUSEPORT); four client threads in another process send the
filtered list for `--seconds`, each request on a new HTTP connection.
"""

import argparse
import json
import logging
import math
import multiprocessing
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labweb.settings")
# As in production: DEBUG off (no query log), so the figures are what a server pays.
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-bench-only-secret-key")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/labweb_bench_review")
os.environ["DATABASE_CONN_MAX_AGE"] = "0"

LEAVES = 1000
BRANCHES = 10
# Label Studio 1.23.2 at 1,000,000 tasks on PostgreSQL, on this machine's kind, with the same request shapes.
PEER = {
    "page": 262.0,
    "filtered": 536.0,
    "sorted": 442.0,
    "filtered_sorted": 802.0,
    "throughput": 2.0,
    "open": 2500.0,
    "bulk": 96_000.0,
    "bulk_undo": 91_000.0,
}
TARGET_LIST_MS, TARGET_OPEN_MS, TARGET_BULK_S, TARGET_RPS = 50, 150, 2.0, 100
WORDS = (
    "moon orbit planet star light energy water river mountain city market price value growth system model data "
    "answer question reason because therefore however example result method theory practice history future "
    "science nature animal plant cell protein gene memory language word sentence poem story number equation "
    "proof triangle circle area volume speed time distance force mass heat cold winter summer ocean island"
).split()


def leaf_path(i: int) -> str:
    return f"compositional_skills/branch_{i % BRANCHES}/topic_{(i // BRANCHES) % 10}/leaf_{i}"


def text(rng: random.Random, low: int = 20, high: int = 60) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def load(samples: int) -> None:
    import hashlib

    from django.contrib.auth.models import Group, User
    from django.db import connection, transaction
    from django.utils import timezone

    from curation.models import Leaf
    from generation.models import GenerationRun, Sample, Teacher, WorkItem
    from review.models import BulkJob, Counter, Decision, ReviewItem, Vote
    from review.services.sync import review_sync

    print(f"loading {samples:,} samples ...", flush=True)
    started = time.perf_counter()
    with transaction.atomic():
        for model in (Vote, Counter):
            model.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE review_decision, review_reviewitem, review_bulkjob, generation_sample, "
                "generation_workitem, generation_runevent, generation_generationrun CASCADE"
            )
        for model in (Teacher, Leaf):
            model.objects.all().delete()
        assert not (BulkJob.objects.exists() or Decision.objects.exists() or ReviewItem.objects.exists())
        Leaf.objects.bulk_create(
            [
                Leaf(
                    path=leaf_path(i),
                    kind="compositional_skills",
                    version=3,
                    created_by="bench",
                    is_valid=True,
                    task_description=f"Leaf {i}",
                    content_hash=hashlib.sha256(leaf_path(i).encode()).hexdigest(),
                )
                for i in range(LEAVES)
            ],
            batch_size=1000,
        )
        leaves = dict(Leaf.objects.values_list("path", "pk"))
        reviewer = User.objects.filter(username="bench-reviewer").first() or User.objects.create_user("bench-reviewer")
        reviewer.groups.add(Group.objects.get_or_create(name="reviewer")[0])
        items = []
        for number in (1, 2):
            model = f"teacher-{number}"
            teacher = Teacher.objects.create(name=f"Teacher {number}", base_url="http://127.0.0.1:9/v1", model=model)
            run = GenerationRun.objects.create(
                teacher=teacher, teacher_config={"model": model}, status=GenerationRun.Status.SUCCEEDED
            )
            spec = {"leaf": {"path": "", "kind": "skills", "seeds": [{"question": "Seed q?", "answer": "Seed a."}]}}
            items += WorkItem.objects.bulk_create(
                [
                    WorkItem(
                        run=run,
                        leaf_id=leaves[leaf_path(i)],
                        leaf_path=leaf_path(i),
                        leaf_hash="x",
                        kind="skills",
                        seed_index=0,
                        unit="seed 0",
                        spec=spec,
                        target=samples // LEAVES // 2,
                        state=WorkItem.State.DONE,
                    )
                    for i in range(LEAVES)
                ]
            )
    with connection.cursor() as cursor:
        # The full-text index is built once after the load, not row by row during it.
        cursor.execute("DROP INDEX IF EXISTS review_sample_text")
    rng = random.Random(14)
    now = timezone.now().isoformat()
    columns = (
        "idempotency_key",
        "run_id",
        "item_id",
        "leaf_id",
        "leaf_path",
        "kind",
        "question",
        "response",
        "seed_indices",
        "scores",
        "rationales",
        "raw",
        "prompts",
        "steered_verdicts",
        "teacher_id",
        "teacher_model",
        "created_at",
    )
    prompts = json.dumps(["skills_questions@1", "question_judge@1", "skills_response@1", "pair_judge@1"])
    copy_sql = f"COPY generation_sample ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.connection.cursor().copy(copy_sql) as copy:
        for n in range(samples):
            item = items[n % len(items)]
            pair = rng.choices((1, 2, 3), weights=(1, 3, 6))[0]
            scores = json.dumps({"question": 1, "pair": pair})
            rationales = json.dumps(
                {
                    "question": f"The question is clear. {text(rng, 8, 20)}",
                    "pair": f"The answer is {('poor', 'adequate', 'good')[pair - 1]}. {text(rng, 10, 30)}",
                }
            )
            copy.write_row(
                (
                    f"{item.run_id}:{item.pk}:{n}",
                    item.run_id,
                    item.pk,
                    item.leaf_id,
                    item.leaf_path,
                    "skills",
                    f"Q{n}: {text(rng)}?",
                    f"A{n}: {text(rng)}.",
                    "[0]",
                    scores,
                    rationales,
                    "{}",
                    prompts,
                    "[]",
                    item.run.teacher_id,
                    item.run.teacher_config["model"],
                    now,
                )
            )
            if n and n % 200_000 == 0:
                print(f"  {n:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE generation_sample s SET duplicate_of_id = s.id - 1 WHERE s.id % 50 = 0"
            " AND EXISTS (SELECT 1 FROM generation_sample p WHERE p.id = s.id - 1)"
        )
        print(f"  samples in {time.perf_counter() - started:.0f} s; full-text index ...", flush=True)
        cursor.execute(
            "CREATE INDEX review_sample_text ON generation_sample "
            "USING gin (to_tsvector('english', question || ' ' || response))"
        )
    opened = review_sync()
    assert opened == samples == Sample.objects.count(), (opened, samples)
    vacuum()
    print(f"loaded in {time.perf_counter() - started:.0f} s", flush=True)


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def sizes() -> dict[str, tuple[int, int]]:
    from django.db import connection

    tables = ("review_reviewitem", "review_decision", "review_counter", "generation_sample")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, pg_table_size(oid), pg_indexes_size(oid) FROM pg_class WHERE relname = ANY(%s)",
            [list(tables)],
        )
        return {name: (table, index) for name, table, index in cursor.fetchall()}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def timed(fn, *, requests: int, warmup: int = 5) -> float:
    """p95 milliseconds of `fn()` over `requests` calls after `warmup`."""
    from bench._django import timings_ms

    return p95(timings_ms(fn, requests=requests, warmup=warmup))


def serve(port: int, ready, conn_max_age: int = 0) -> None:
    import django

    os.environ["DATABASE_CONN_MAX_AGE"] = str(conn_max_age)
    django.setup()
    from django.db import connections

    connections.close_all()  # a forked server must not share its parent's connection
    connections["default"].settings_dict["CONN_MAX_AGE"] = conn_max_age
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from django.core.wsgi import get_wsgi_application

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    class Shared(WSGIServer):
        def server_bind(self):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()

    logging.disable(logging.WARNING)
    server = make_server("127.0.0.1", port, get_wsgi_application(), server_class=Shared, handler_class=Quiet)
    ready.set()
    server.serve_forever()


def hammer(port: int, path: str, token: str, clients: int, seconds: float) -> tuple[int, int]:
    import requests

    done = [0] * clients
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def client(index: int) -> None:
        while time.perf_counter() < stop:
            response = requests.get(
                f"http://127.0.0.1:{port}{path}",
                headers={"Authorization": f"Token {token}", "Connection": "close"},
                timeout=30,
            )
            if response.status_code == 200:
                done[index] += 1
            else:
                errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), sum(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--reload", action="store_true")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--only", default="lists,open,bulk,throughput", help="Which parts to run, comma-separated")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from generation.models import Sample
    from labweb.celery import app
    from review.models import BulkJob, ReviewItem
    from review.queue import Queue, encode_cursor
    from review.services import bulk

    call_command("migrate", verbosity=0)
    if args.reload or Sample.objects.count() != args.samples:
        load(args.samples)
    reviewer = User.objects.get(username="bench-reviewer")
    ReviewItem.objects.filter(claimed_by__isnull=False).update(claimed_by=None, claimed_until=None)
    token = Token.objects.get_or_create(user=reviewer)[0].key
    client = Client()
    client.force_login(reviewer)
    branch = "compositional_skills/branch_3"
    share = ReviewItem.objects.filter(leaf_path__startswith=branch + "/").count() / args.samples
    top = ReviewItem.objects.order_by("-sample_id").values_list("sample_id", flat=True).first()

    def get(url: str) -> None:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.content[:300])

    deep = encode_cursor([int(top * 0.9)])
    deep_score = encode_cursor([2.0, int(top * 0.9)])
    lists = [
        ("page", "queue page of 30, unfiltered", "/api/review/items/?page_size=30"),
        ("filtered", f"filtered by branch prefix ({share:.0%})", f"/api/review/items/?page_size=30&path={branch}"),
        ("score", "filtered by score (score 2)", "/api/review/items/?page_size=30&score_min=2&score_max=2"),
        ("sorted", "sorted by score", "/api/review/items/?page_size=30&sort=-score"),
        (
            "filtered_sorted",
            "branch prefix, sorted by score",
            f"/api/review/items/?page_size=30&path={branch}&sort=-score",
        ),
        ("deep", "deep page by cursor (90% in)", f"/api/review/items/?page_size=30&cursor={deep}"),
        (
            "deep_sorted",
            "deep page by cursor, sorted by score",
            f"/api/review/items/?page_size=30&sort=score&cursor={deep_score}",
        ),
        ("text", "full-text search (two words)", "/api/review/items/?page_size=30&q=moon+orbit"),
        ("html", "queue page (HTML), branch prefix", f"/review/?path={branch}"),
    ]
    parts = set(args.only.split(","))
    rows = []
    if "lists" in parts:
        for key, label, url in lists:
            rows.append((key, label, timed(lambda url=url: get(url), requests=args.requests)))

    def open_screen() -> None:
        claimed = client.post(f"/review/claim/?{urlencode({'path': branch})}", {"size": 20})
        assert claimed.status_code == 302, claimed.status_code
        get(claimed["Location"])

    if "open" in parts:
        rows.append(
            ("open", "open the review screen (claim, then the screen)", timed(open_screen, requests=args.requests))
        )
        ReviewItem.objects.filter(claimed_by__isnull=False).update(claimed_by=None, claimed_until=None)

    bulk_figures = None
    if "bulk" in parts:
        # Bulk approve of the branch (~100,000) by filter, and its undo, as the jobs run (eager: in this process),
        # in bulk.WORKERS slices on as many connections; then the same round trip on one connection, the
        # baseline of the same minutes.
        app.conf.task_always_eager = True
        queue = Queue(path=branch)
        workers = bulk.WORKERS

        def round_trip() -> tuple[int, float, float, float]:
            vacuum()
            start = time.perf_counter()
            count, ceiling = bulk.bulk_preview(queue=queue, selected=[], excluded=[], reviewer=reviewer)
            preview_s = time.perf_counter() - start
            start = time.perf_counter()
            job = bulk.bulk_create(reviewer=reviewer, action="approve", queue=queue, expected=count, ceiling=ceiling)
            bulk_s = time.perf_counter() - start
            job.refresh_from_db()
            assert (job.status, job.done) == (BulkJob.Status.DONE, count), (job.status, job.done, count)
            start = time.perf_counter()
            bulk.bulk_undo(job=job, reviewer=reviewer)
            undo_s = time.perf_counter() - start
            job.refresh_from_db()
            assert (job.status, job.undone) == (BulkJob.Status.UNDONE, count), (job.status, job.undone)
            return count, preview_s, bulk_s, undo_s

        vacuum()
        before = sizes()
        count, preview_s, bulk_s, undo_s = round_trip()
        after = sizes()
        bulk.WORKERS = 1
        try:
            _, _, one_bulk_s, one_undo_s = round_trip()
        finally:
            bulk.WORKERS = workers
        vacuum()
        bulk_figures = (count, preview_s, bulk_s, undo_s, before, after, sizes(), one_bulk_s, one_undo_s, workers)

    throughput = []
    if "throughput" in parts:
        # Throughput of the filtered list: two server processes, four clients, a new HTTP connection a request;
        # once with a new database connection a request too, once with persistent ones (the settings' default).
        path = f"/api/review/items/?page_size=30&path={branch}"
        for port, conn_max_age in ((18765, 0), (18766, 60)):
            servers = []
            for _ in range(2):
                ready = multiprocessing.Event()
                process = multiprocessing.Process(target=serve, args=(port, ready, conn_max_age), daemon=True)
                process.start()
                ready.wait(30)
                servers.append(process)
            hammer(port, path, token, args.clients, 2.0)  # warm-up: each server's first requests load code
            served, failed = hammer(port, path, token, args.clients, args.seconds)
            for process in servers:
                process.terminate()
            throughput.append((conn_max_age, served / args.seconds, failed))
    connection.close()

    print(
        f"\ndatabase: PostgreSQL, {args.samples:,} samples, {LEAVES:,} leaves; p95 of {args.requests} requests"
        f" after 5 warm-up, new connection per request; load average {os.getloadavg()[0]:.1f}"
    )
    if rows:
        print(f"{'request':52} {'p95 ms':>8} {'target':>8} {'peer ms':>8} {'peer/us':>8}")
    for key, label, ms in rows:
        target = TARGET_OPEN_MS if key == "open" else TARGET_LIST_MS if key != "html" else None
        peer = PEER.get(key if key != "score" else "filtered")
        verdict = "" if target is None else ("met" if ms < target else "MISSED")
        peer_text = f"{peer:8.0f} {peer / ms:7.1f}x" if peer else f"{'':8} {'':8}"
        print(f"{label:52} {ms:8.1f} {verdict:>8} {peer_text}")
    if bulk_figures:
        count, preview_s, bulk_s, undo_s, before, after, vacuumed, one_bulk_s, one_undo_s, workers = bulk_figures
        print(f"bulk preview (count {count:,} for the confirmation): {preview_s * 1000:.0f} ms")
        for label, seconds, one, peer in (
            ("bulk approve", bulk_s, one_bulk_s, PEER["bulk"]),
            ("bulk undo", undo_s, one_undo_s, PEER["bulk_undo"]),
        ):
            verdict = "met" if seconds < TARGET_BULK_S else "MISSED"
            print(
                f"{label} of {count:,} by filter, {workers} connections: {seconds:.2f} s ({verdict}; peer"
                f" {peer / 1000:.0f} s, {peer / 1000 / seconds:.0f}x; one connection {one:.2f} s,"
                f" {one / seconds:.2f}x)"
            )
    for conn_max_age, rps, failed in throughput:
        connections = "persistent database connections" if conn_max_age else "a database connection a request"
        print(
            f"filtered list, {args.clients} clients, 2 server processes, {connections}: {rps:.0f} requests/s"
            f" ({'met' if rps >= TARGET_RPS else 'MISSED'}; peer {PEER['throughput']:.0f}/s,"
            f" {rps / PEER['throughput']:.0f}x; {failed} failed)"
        )
    if bulk_figures:
        print(f"{'table':22} {'before MiB':>12} {'after MiB':>12} {'vacuumed MiB':>12}   (table + indexes)")
        for name in before:
            cells = " ".join(
                f"{(t + i) / 2**20:7.0f} ({i / 2**20:.0f})".rjust(12)
                for t, i in (before[name], after[name], vacuumed[name])
            )
            print(f"{name:22} {cells}")


if __name__ == "__main__":
    main()
