"""A dataset build's peak memory as the number of approved samples grows: it should stay flat.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/labweb_bench_dataset .venv/bin/python bench/bench_dataset_build.py
     [--sizes 50000,200000] [--reload]

The load is bench_review's (1,000 leaves, two runs, 20-60-word questions and answers), kept between runs; every
other sample is made a knowledge sample (a third of those with answers past the "complex" threshold) so a phased
build writes all four files. For each size the first N samples are approved and `dataset_build` runs in a fresh
process (the service the Celery task calls: the real queries, tokenizer, files, lineage rows). Peak memory is
that process's high-water mark (VmHWM) less its resident size just before the build, once Django, the database
connection and the tokenizer are loaded; the baseline is the smallest size, measured in the same run.
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labweb.settings")
os.environ.setdefault("DEBUG", "0")  # as in production: no query log growing with the build
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-bench-only-secret-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/labweb_bench_dataset")


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def approve(samples: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT min(sample_id) FROM review_reviewitem")
        (first,) = cursor.fetchone()
        cursor.execute(
            "UPDATE review_reviewitem SET state = CASE WHEN sample_id < %s THEN 'approved' ELSE 'pending' END",
            [first + samples],
        )
        cursor.execute("VACUUM ANALYZE review_reviewitem")


def build(storage: str, queue) -> None:
    """In a fresh process: the build, and how much memory it took beyond what was loaded before it."""
    os.environ["LABWEB_TRAINING_DIR"] = storage
    import django

    django.setup()
    from django.contrib.auth.models import User

    from training.models import Dataset
    from training.services import datasets

    counter = datasets.token_counter(datasets.EMBEDDED)  # loaded once here so the baseline holds a tokenizer
    counter({"messages": [{"role": "user", "content": "warm"}]})
    user = User.objects.get_or_create(username="bench-operator")[0]
    with django.db.transaction.atomic():
        dataset = Dataset.objects.create(
            name="bench", system_prompt="You are a helpful assistant.", tokenizer=datasets.EMBEDDED, created_by=user
        )
    before = memory_kb("VmRSS")
    started = time.perf_counter()
    datasets.dataset_build(dataset_id=dataset.pk)
    seconds = time.perf_counter() - started
    dataset.refresh_from_db()
    assert dataset.status == "succeeded", dataset.error
    files = {f.role: f.samples for f in dataset.files.all()}
    queue.put(
        {
            "seconds": seconds,
            "baseline_mb": before / 1024,
            "peak_mb": memory_kb("VmHWM") / 1024,
            "growth_mb": (memory_kb("VmHWM") - before) / 1024,
            "samples": dataset.samples,
            "tokens": dataset.tokens,
            "files": files,
            "bytes": sum(f.bytes for f in dataset.files.all()),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000,200000")
    parser.add_argument("--reload", action="store_true")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from review.models import ReviewItem

    if args.reload or ReviewItem.objects.count() < sizes[-1]:
        sys.path.insert(0, str(REPO / "bench"))
        from bench_review import load  # the same corpus the review bench measures

        load(sizes[-1])
        with connection.cursor() as cursor:
            # Half knowledge; a third of those long enough to be "complex" (past 80 words).
            cursor.execute("UPDATE generation_sample SET kind = 'knowledge' WHERE id % 2 = 0")
            cursor.execute("UPDATE generation_sample SET response = repeat(response || ' ', 3) WHERE id % 6 = 0")
            cursor.execute(
                "UPDATE review_reviewitem r SET kind = s.kind FROM generation_sample s WHERE s.id = r.sample_id"
            )
    connection.close()

    context = multiprocessing.get_context("spawn")
    results = {}
    for size in sizes:
        approve(size)
        connection.close()
        with tempfile.TemporaryDirectory(prefix="bench-dataset-") as storage:
            queue = context.Queue()
            process = context.Process(target=build, args=(storage, queue))
            process.start()
            results[size] = queue.get()
            process.join()
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM training_datasetsample; DELETE FROM training_datasetfile; DELETE FROM training_dataset"
            )
        print(f"  {size:,}: {results[size]}", flush=True)

    base = results[sizes[0]]
    print(
        f"\n{'approved samples':>17} {'seconds':>8} {'samples/s':>9} {'before MB':>9} {'peak MB':>8} "
        f"{'growth MB':>9} {'growth vs ' + format(sizes[0], ','):>16}"
    )
    for size, r in results.items():
        print(
            f"{size:>17,} {r['seconds']:>8.1f} {r['samples'] / r['seconds']:>9,.0f} {r['baseline_mb']:>9.1f} "
            f"{r['peak_mb']:>8.1f} {r['growth_mb']:>9.1f} {r['growth_mb'] / max(base['growth_mb'], 0.1):>15.2f}x"
        )
    last = results[sizes[-1]]
    print(f"files at {sizes[-1]:,}: {last['files']}, {last['bytes'] / 1e6:.0f} MB written, {last['tokens']:,} tokens")
    ratio = last["growth_mb"] / max(base["growth_mb"], 0.1)
    print(f"samples x{sizes[-1] / sizes[0]:.0f}, peak growth x{ratio:.2f}: {'flat' if ratio < 1.5 else 'NOT flat'}")


if __name__ == "__main__":
    main()
