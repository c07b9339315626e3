"""Shared set-up for benchmarks: Django on a throw-away test database (PostgreSQL unless DATABASE_URL says)."""

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "instructlab-taxonomy"
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labweb.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/labweb_bench")


@contextmanager
def test_database():
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield name
    finally:
        if connection.vendor == "postgresql":
            # Threads a bench ran work on (and generation's event-loop thread) keep connections of their own.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        connection.creation.destroy_test_db(name, verbosity=0)


def best_of(runs: int, fn, setup=None) -> float:
    """The fastest of `runs` timings in seconds (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def timings_ms(fn, *, requests: int, warmup: int = 5) -> list[float]:
    """Milliseconds of each of `requests` calls of `fn()` after `warmup`, sorted."""
    for _ in range(warmup):
        fn()
    values = []
    for _ in range(requests):
        start = time.perf_counter()
        fn()
        values.append((time.perf_counter() - start) * 1000)
    return sorted(values)


def percentile(ordered: list[float], share: float) -> float:
    return ordered[max(0, -(-int(share * 100) * len(ordered) // 100) - 1)]
