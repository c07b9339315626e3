"""Peak memory and time of `GET /api/export/` on a taxonomy of LEAVES leaves (20,000 by default): the corpus's 301
leaves imported, then copied under new paths (with their imported files and seeds) until there are LEAVES, each
copy of a knowledge leaf with a 20 KB document.

Peak memory is measured twice, over the request and the reading of its whole body: tracemalloc's peak (what
Python allocated), and the growth of the process's resident set (VmHWM after the export, its peak having been
reset, against VmRSS before; the heap the build left free hides part of it). Then the archive made as it was before
it streamed (tests/curation/test_export_stream.py keeps that way as the reference), timed and traced alike.

Run: .venv/bin/python bench/bench_export.py [LEAVES]   (PostgreSQL by default, on a throw-away test database)
"""

import gc
import logging
import sys
import time
import tracemalloc
from pathlib import Path

from _django import CORPUS, test_database

DOCUMENT = ("A paragraph of a knowledge document, about what the leaf teaches. " * 300)[:20_000]


def build(count: int) -> None:
    import hashlib

    from django.contrib.auth.models import User
    from django.core.management import call_command

    from curation.models import Document, Leaf, SeedExample

    user = User.objects.create_user("bench")
    call_command("taxonomy_import", str(CORPUS), "--user", user.username, verbosity=0)
    originals = list(Leaf.objects.filter(is_valid=True).prefetch_related("seeds"))
    copy = 0
    while Leaf.objects.count() < count:
        batch = []
        for original in originals:
            if len(batch) + Leaf.objects.count() >= count:
                break
            fields = {
                f.name: getattr(original, f.name)
                for f in Leaf._meta.concrete_fields
                if f.name not in ("id", "path", "created_at", "updated_at", "updated_by")
            }
            path = f"{original.path}_copy_{copy}"
            fields["content_hash"] = hashlib.sha256(path.encode()).hexdigest()
            batch.append((original, Leaf(path=path, **fields)))
        made = Leaf.objects.bulk_create([leaf for _, leaf in batch], batch_size=2000)
        SeedExample.objects.bulk_create(
            [
                SeedExample(
                    leaf=leaf,
                    position=seed.position,
                    context=seed.context,
                    question=seed.question,
                    answer=seed.answer,
                    questions_and_answers=seed.questions_and_answers,
                    extra=seed.extra,
                )  # fmt: skip
                for (original, _), leaf in zip(batch, made, strict=True)
                for seed in original.seeds.all()
            ],
            batch_size=5000,
        )
        Document.objects.bulk_create(
            [
                Document(leaf=leaf, name="source.md", content=DOCUMENT, sha256="0" * 64, size=len(DOCUMENT))
                for leaf in made
                if leaf.kind == "knowledge"
            ],
            batch_size=500,
        )
        copy += 1
    from django.db import connection

    if connection.vendor == "postgresql":
        # What autovacuum does to tables this size soon after: without statistics a chunk's seeds (IN 200 leaves)
        # are read by a scan of the whole table, 65 ms a chunk.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def export(api) -> int:
    response = api.get("/api/export/")
    assert response.status_code == 200, response.status_code
    size = 0
    if response.streaming:
        for chunk in response.streaming_content:
            size += len(chunk)
    else:
        size = len(response.content)
    response.close()
    return size


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    logging.disable(logging.WARNING)
    with test_database():
        from django.contrib.auth.models import Group, User
        from rest_framework.test import APIClient

        from curation.models import Document, Leaf

        started = time.perf_counter()
        build(count)
        print(
            f"{Leaf.objects.count()} leaves, {Document.objects.count()} documents, "
            f"built in {time.perf_counter() - started:.0f} s"
        )
        user = User.objects.get(username="bench")
        user.groups.add(Group.objects.get_or_create(name="curator")[0])
        api = APIClient()
        api.force_authenticate(user)
        export(api)  # warm: imports, the first queries

        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
        before = rss_kib("VmRSS")
        started = time.perf_counter()
        size = export(api)
        seconds = time.perf_counter() - started
        grown = rss_kib("VmHWM") - before
        print(f"archive {size / 2**20:.1f} MiB in {seconds:.1f} s; peak RSS +{grown / 1024:.0f} MiB")

        gc.collect()
        tracemalloc.start()
        export(api)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"tracemalloc peak {peak / 2**20:.1f} MiB")

        # The export as it was made before it streamed (every file, then the archive, in memory), here alike.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.curation.test_export_stream import archive_held_in_memory

        started = time.perf_counter()
        archive_held_in_memory()
        seconds = time.perf_counter() - started
        gc.collect()
        tracemalloc.start()
        archive_held_in_memory()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"held in memory as before: {seconds:.1f} s, tracemalloc peak {peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
