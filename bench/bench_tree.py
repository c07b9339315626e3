"""Server time of the taxonomy tree page at 5,000 leaves, against the same page at 100 leaves and the admin.

Run: .venv/bin/python bench/bench_tree.py [--leaves 5000] [--runs 15]
Each request goes through the Django test Client (middleware, session, templates; no network), signed in as a
curator, best of `runs` after two warm-up requests. Leaves are inserted with bulk_create (the tree reads only
their path, kind and validity), 4 levels deep across the three roots, 1 in 37 invalid. Baselines, measured in
the same run on the same database: the tree page at 100 leaves, and the Django admin changelist of leaves
(100 a page, a count and three filters) at the full size.
"""

import argparse
import hashlib
import logging

from _django import best_of, test_database

TARGET_MS = 100
AREAS = ["writing", "reasoning", "extraction", "science", "history", "math", "coding", "language", "law", "health"]
TOPICS = ["basics", "poetry", "tables", "summaries", "proofs", "puzzles", "letters", "dialogue", "lists", "travel"]
NAMES = [
    "haiku",
    "limerick",
    "word_problems",
    "timelines",
    "glossary",
    "recipes",
    "invoices",
    "moons",
    "rivers",
    "sorting",
    "idioms",
    "riddles",
    "emails",
    "sonnets",
    "ledgers",
]
ROOT_OF_DIGIT = ["compositional_skills"] * 5 + ["knowledge"] * 3 + ["foundational_skills"] * 2


def leaf_path(i: int) -> str:
    """Leaf i of a synthetic taxonomy: root / area / topic / name, every 7th one a level deeper."""
    root = ROOT_OF_DIGIT[i % 10]
    area, topic = AREAS[(i // 10) % 10], TOPICS[(i // 100) % 10]
    name = f"{NAMES[i % len(NAMES)]}_{i}"
    if i % 7 == 0:
        return f"{root}/{area}/{topic}/{NAMES[(i // 7) % len(NAMES)]}/{name}"
    return f"{root}/{area}/{topic}/{name}"


def add_leaves(start: int, stop: int) -> None:
    from curation.models import Leaf

    Leaf.objects.bulk_create(
        [
            Leaf(
                path=(path := leaf_path(i)),
                kind=path.split("/", 1)[0],
                version=3,
                created_by="bench",
                task_description=f"Synthetic leaf {i} for the tree benchmark.",
                is_valid=i % 37 != 0,
                problems=[] if i % 37 else [{"field": "seed_examples", "message": "Too few.", "level": "error"}],
                content_hash=hashlib.sha256(path.encode()).hexdigest(),
            )
            for i in range(start, stop)
        ],
        batch_size=1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    small = 100

    with test_database():
        from django.contrib.auth.models import Group, User
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from curation.models import Leaf
        from curation.selectors import taxonomy_tree

        curator = User.objects.create_user("bench-curator")
        curator.groups.add(Group.objects.get_or_create(name="curator")[0])
        admin = User.objects.create_superuser("bench-admin", "admin@example.com", "x")
        as_curator, as_admin = Client(), Client()
        as_curator.force_login(curator)
        as_admin.force_login(admin)
        htmx = {"HX-Request": "true"}

        def measure(client: Client, url: str, headers: dict | None = None) -> tuple[float, int, int]:
            """(best seconds, queries, response KiB) of one GET."""
            for _ in range(2):
                assert client.get(url, headers=headers or {}).status_code == 200, url
            connection.queries_log.clear()  # DEBUG logs every query into a bounded deque; a full one counts 0
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url, headers=headers or {})
            seconds = best_of(args.runs, lambda: client.get(url, headers=headers or {}))
            return seconds, len(queries), len(response.content) // 1024

        add_leaves(0, small)
        rows = [(f"tree page, {small} leaves (baseline)", measure(as_curator, "/taxonomy/"))]
        add_leaves(small, args.leaves)
        assert Leaf.objects.count() == args.leaves
        n = f"{args.leaves:,}"
        deep = max((leaf_path(i) for i in range(args.leaves)), key=lambda p: (p.count("/"), p))
        topic = deep.rsplit("/", 2)[0]
        word = NAMES[1]
        rows += [
            (f"tree page, {n} leaves", measure(as_curator, "/taxonomy/")),
            (f"tree page ?open=<{deep.count('/') + 1}-level path>", measure(as_curator, f"/taxonomy/?open={deep}")),
            ("children partial (htmx), a root", measure(as_curator, "/taxonomy/tree/children/?path=knowledge", htmx)),
            (
                "children partial (htmx), a topic folder",
                measure(as_curator, f"/taxonomy/tree/children/?path={topic}", htmx),
            ),
            (f"search partial (htmx) ?q={word}", measure(as_curator, f"/taxonomy/?q={word}", htmx)),
            (f"search, full page ?q={word}", measure(as_curator, f"/taxonomy/?q={word}")),
            (f"admin leaf changelist, {n} leaves (reference)", measure(as_admin, "/admin/curation/leaf/")),
        ]
        selector = best_of(args.runs, taxonomy_tree)
        matches = Leaf.objects.filter(path__icontains=word).count()
        vendor = connection.vendor

    base, admin_time = rows[0][1][0], rows[-1][1][0]
    print(f"database: {vendor}; best of {args.runs}; search matches {matches} leaves; deep path {deep}")
    print(f"{'request':46} {'ms':>7} {'queries':>7} {'KiB':>5} {'vs 100':>7} {'vs admin':>8}")
    for name, (seconds, queries, kib) in rows:
        ratios = f"{seconds / base:6.1f}x {seconds / admin_time:7.2f}x"
        print(f"{name:46} {seconds * 1000:7.1f} {queries:7} {kib:5} {ratios}")
    print(f"{'taxonomy_tree() alone, ' + n + ' leaves':46} {selector * 1000:7.1f}")
    tree_ms = rows[1][1][0] * 1000
    print(
        f"target: tree page under {TARGET_MS} ms at {n} leaves -> {'met' if tree_ms < TARGET_MS else 'MISSED'}"
        f" ({tree_ms:.1f} ms)"
    )


if __name__ == "__main__":
    main()
