"""Time and peak memory of imports at the edges: the corpus, a 10,000-seed leaf, the largest archive the
default limits allow (256 MiB unpacked in 2 MiB files), a prune re-import of that archive, and 8 leaves whose
qna.yaml is itself just under 2 MiB (the largest file being a qna.yaml rather than a document), and the largest
archive as the API runs it since imports are jobs ("largest-job": the upload spooled into the database a MiB at a
time, as the request does from the file Django stored it in, then the job run here as its worker runs it).

Run: .venv/bin/python bench/bench_import_limits.py   (each case in a fresh process, so that its peak RSS is its own)
Baseline: the process's RSS after Django set-up and before the import (peak reset there), beside the peak.
"""

import gzip
import io
import os
import random
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _django import CORPUS, test_database

POEMS = b"version: 3\ntask_description: Poems.\ncreated_by: bench\nseed_examples:\n" + b"".join(
    b"  - question: q%d\n    answer: a%d\n" % (i, i) for i in range(5)
)
KNOWLEDGE = (
    b"version: 3\ndomain: bench\ncreated_by: bench\ndocument_outline: A document.\n"
    b"document:\n  repo: https://example.com/r\n  commit: abc\n  patterns: ['*.md']\nseed_examples:\n"
    + b"".join(
        b"  - context: c%d\n    questions_and_answers:\n" % i
        + b"".join(b"      - question: q%d\n        answer: a%d\n" % (j, j) for j in range(3))
        for i in range(5)
    )
)


def rss_mib() -> float:
    """Peak RSS since the last reset_peak() (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def seeds_archive(path: Path) -> None:
    seeds = b"".join(b"  - question: question %d?\n    answer: answer %d.\n" % (i, i) for i in range(10_000))
    raw = b"version: 3\ntask_description: many\ncreated_by: bench\nseed_examples:\n" + seeds
    write_tar(path, [("compositional_skills/many/qna.yaml", raw)])


def big_qna_archive(path: Path, leaves: int = 8) -> None:
    """Leaves whose qna.yaml is itself just under 2 MiB (about 9,000 seed examples): memory per parsed leaf."""
    answer = b"a long answer " * 14
    files = []
    for i in range(leaves):
        raw = b"version: 3\ntask_description: big\ncreated_by: bench\nseed_examples:\n"
        n = 0
        while len(raw) < 2 * 1024 * 1024 - 400:
            raw += b"  - question: question %d of leaf %d?\n    answer: %s%d.\n" % (n, i, answer, n)
            n += 1
        files.append((f"compositional_skills/big/leaf{i}/qna.yaml", raw))
    write_tar(path, files)


def largest_archive(path: Path) -> None:
    """Just under 256 MiB unpacked: leaves of one qna.yaml and one document of just under 2 MiB."""
    rng = random.Random(1)
    words = [("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9)))).encode() for _ in range(4000)]
    line = b" ".join(rng.choice(words) for _ in range(20000)) + b"\n"
    files = []
    total, i = 0, 0
    limit = 256 * 1024 * 1024
    while True:
        doc = (line * 20)[: 2 * 1024 * 1024 - 4096 - i]
        if total + len(doc) + len(KNOWLEDGE) > limit:
            break
        files += [(f"knowledge/bench/leaf{i}/qna.yaml", KNOWLEDGE), (f"knowledge/bench/leaf{i}/doc.md", doc)]
        total += len(doc) + len(KNOWLEDGE)
        i += 1
    write_tar(path, files)


def write_tar(path: Path, files) -> None:
    with gzip.open(path, "wb", compresslevel=1) as raw, tarfile.open(fileobj=raw, mode="w|") as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def one(case: str, archive: str) -> None:
    with test_database():
        from django.conf import settings
        from django.contrib.auth.models import User

        from curation.models import Leaf, SeedExample
        from curation.services import ImportSource, taxonomy_import

        # DEBUG keeps the SQL of every query, documents and all: that is not what a server holds.
        settings.DEBUG = False
        user = User.objects.create(username="bench")
        if case == "prune":  # the archive is in already; the prune re-import is what is measured
            with open(archive, "rb") as stream:
                taxonomy_import(source=ImportSource.upload(stream, "a.tar.gz"), user=user)
        import gc

        gc.collect()
        reset_peak()
        before = rss_mib()
        start = time.perf_counter()
        if case == "corpus":
            record = taxonomy_import(source=ImportSource.directory(CORPUS), user=user, from_shell=True)
        elif case == "largest-job":
            from curation.services.imports.jobs import import_job_create, import_job_run
            from labweb.celery import app

            with open(archive, "rb") as stream:
                job = import_job_create(source=ImportSource.upload(stream, "a.tar.gz"), user=user)
            import_job_run(job_id=job.pk)
            job.refresh_from_db()
            record = job.record
            app.control.purge()  # the task message the job sent: it was run here
        else:
            with open(archive, "rb") as stream:
                source = ImportSource.upload(stream, "a.tar.gz")
                record = taxonomy_import(source=source, user=user, prune=case == "prune", allow_remove_all=True)
        seconds = time.perf_counter() - start
        print(
            f"RESULT {case} {seconds:.2f} {before:.0f} {rss_mib():.0f} status={record.status} "
            f"created={record.created} unchanged={record.unchanged} rejected={record.rejected} "
            f"leaves={Leaf.objects.count()} seeds={SeedExample.objects.count()}"
        )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3])
        return
    with tempfile.TemporaryDirectory() as tmp:
        seeds, largest, big = Path(tmp, "seeds.tar.gz"), Path(tmp, "largest.tar.gz"), Path(tmp, "big.tar.gz")
        seeds_archive(seeds)
        largest_archive(largest)
        big_qna_archive(big)
        print(f"largest archive: {largest.stat().st_size / 2**20:.0f} MiB compressed")
        print(f"{'case':10} {'seconds':>8} {'RSS before MiB':>15} {'peak RSS MiB':>13}  outcome")
        cases = [("corpus", ""), ("seeds", seeds), ("big-qna", big), ("largest", largest), ("prune", largest)]
        cases.append(("largest-job", largest))
        for case, archive in cases:
            out = subprocess.run(
                [sys.executable, __file__, "--one", case, str(archive)],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ,
            ).stdout
            _, name, seconds, before, peak, *rest = next(x for x in out.splitlines() if x.startswith("RESULT")).split()
            print(f"{name:10} {float(seconds):8.2f} {before:>15} {peak:>13}  {' '.join(rest)}")


if __name__ == "__main__":
    main()
