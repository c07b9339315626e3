"""Server time of the taxonomy tree page at 50,000 leaves, against the old way, 100 leaves and the admin.

Run: .venv/bin/python bench/bench_tree.py [--leaves 50000] [--runs 15]
Each request goes through the Django test Client (middleware, session, templates; no network), signed in as a
curator, best of `runs` after two warm-up requests. Leaves are inserted with bulk_create (the tree reads only
their path, kind and validity), 4 levels deep across the three roots, 1 in 37 invalid. Baselines, measured in
the same run on the same database: the tree page at 100 leaves, and the Django admin changelist of leaves
(100 a page, a count and three filters) at the full size; and the old way, kept here only: every request
built the whole folder tree in Python (`taxonomy_tree()`, which the API's whole-tree endpoint still uses) and
rendered the part asked for, through the same template. Rows marked "+ counter" have one per-leaf counter
registered whose provider answers from memory, so they time curation's side of `curation.tree_counters`
(the leaf ids, the sums, the bars), not a provider's own query.
"""

import argparse
import hashlib
import logging
from contextlib import contextmanager

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
    parser.add_argument("--leaves", type=int, default=50000)
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
        from curation.tree import taxonomy_tree

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
        base = measure(as_curator, "/taxonomy/")[0]
        add_leaves(small, args.leaves)
        assert Leaf.objects.count() == args.leaves
        n = f"{args.leaves:,}"
        deep = max((leaf_path(i) for i in range(args.leaves)), key=lambda p: (p.count("/"), p))
        topic = deep.rsplit("/", 2)[0]
        word = NAMES[1]
        requests = [
            (f"tree page, {n} leaves", "/taxonomy/", None),
            (f"tree page ?open=<{deep.count('/') + 1}-level path>", f"/taxonomy/?open={deep}", None),
            ("children partial (htmx), a root", "/taxonomy/tree/children/?path=knowledge", htmx),
            ("children partial (htmx), a topic folder", f"/taxonomy/tree/children/?path={topic}", htmx),
            (f"search partial (htmx) ?q={word}", f"/taxonomy/?q={word}", htmx),
            (f"search, full page ?q={word}", f"/taxonomy/?q={word}", None),
        ]
        rows = []
        for name, url, headers in requests:
            new = measure(as_curator, url, headers)
            with old_way():
                old = measure(as_curator, url, headers)
            rows.append((name, new, old[0]))
        with bench_counter():
            for name, url, headers in requests[:4]:
                rows.append((name + " + counter", measure(as_curator, url, headers), None))
            api_tree = measure(as_curator, "/api/tree/")
        admin_time = measure(as_admin, "/admin/curation/leaf/")[0]
        selector = best_of(args.runs, taxonomy_tree)
        matches = Leaf.objects.filter(path__icontains=word).count()
        vendor = connection.vendor

    print(f"database: {vendor}; best of {args.runs}; search matches {matches} leaves; deep path {deep}")
    heads = ("ms", "old ms", "vs old", "queries", "KiB", "vs 100", "vs admin")
    print(f"{'request':50} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, (7, 7, 6, 7, 5, 7, 8), strict=True)))
    for name, (seconds, queries, kib), old in rows:
        before = f"{old * 1000:7.1f} {seconds / old:5.2f}x" if old else f"{'':7} {'':6}"
        ratios = f"{seconds / base:6.1f}x {seconds / admin_time:7.2f}x"
        print(f"{name:50} {seconds * 1000:7.1f} {before} {queries:7} {kib:5} {ratios}")
    print(f"{'tree page, 100 leaves (baseline)':50} {base * 1000:7.1f}")
    print(f"{'admin leaf changelist, ' + n + ' leaves (reference)':50} {admin_time * 1000:7.1f}")
    api_ms, api_queries, api_kib = api_tree
    print(f"{'API whole tree + counter, ' + n + ' leaves':50} {api_ms * 1000:7.1f} {'':14} {api_queries:7} {api_kib:5}")
    print(f"{'taxonomy_tree() alone (the old way), ' + n + ' leaves':50} {selector * 1000:7.1f}")
    slowest = max(seconds for name, (seconds, _, _), _ in rows if "search" not in name) * 1000
    print(
        f"target: tree page and children partial under {TARGET_MS} ms at {n} leaves, with a counter -> "
        f"{'met' if slowest < TARGET_MS else 'MISSED'} (slowest {slowest:.1f} ms)"
    )


@contextmanager
def old_way():
    """The views as they were: the whole tree built in Python for every tree page and children partial."""
    import importlib

    from curation import tree as selectors

    views = importlib.import_module("curation.views.tree")  # the package re-exports a view named `tree`

    def old_open(path: str = "") -> selectors.Folder:
        return selectors.taxonomy_tree()

    def old_contents(path: str) -> selectors.Folder | None:
        node = selectors.taxonomy_tree()
        for part in [p for p in path.split("/") if p]:
            node = next((c for c in node.children if c.name == part), None)
            if node is None:
                return None
        return node

    def old_kind_counts() -> dict:
        return {c.path: {"leaves": c.leaves, "invalid": c.invalid} for c in selectors.taxonomy_tree().children}

    saved = views.tree_open, views.folder_contents, views.kind_counts
    views.tree_open, views.folder_contents, views.kind_counts = old_open, old_contents, old_kind_counts
    try:
        yield
    finally:
        views.tree_open, views.folder_contents, views.kind_counts = saved


@contextmanager
def bench_counter():
    from curation.tree_counters import LeafCounters, register, unregister

    def counts(leaf_ids):
        return {pk: {"pending": pk % 5, "approved": pk % 3, "rejected": pk % 2} for pk in leaf_ids if pk % 4 == 0}

    register(LeafCounters(key="bench", label="Bench", fields=("pending", "approved", "rejected"), counts=counts))
    try:
        yield
    finally:
        unregister("bench")


if __name__ == "__main__":
    main()
