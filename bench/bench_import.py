"""Import and validate the whole 426-file corpus, against the official instructlab-schema parser.

Run: .venv/bin/python bench/bench_import.py   (PostgreSQL by default; DATABASE_URL=sqlite:///... for SQLite)
The baseline is `TaxonomyParser(schema_version=0)`, the check `ilab taxonomy diff` runs (yamllint included),
timed on the same files in the same run.
"""

import contextlib
import io
import logging
import os
import sys

from _django import CORPUS, best_of, test_database


def official_validate(files) -> None:
    from instructlab.schema.taxonomy import TaxonomyParser, TaxonomyReadingException

    parser = TaxonomyParser(schema_version=0, message_format="STANDARD")
    parser.yq_available = False
    with contextlib.redirect_stdout(io.StringIO()):
        for path in files:
            try:
                parser.parse(path)
            except TaxonomyReadingException:
                pass


def main() -> None:
    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    logging.disable(logging.WARNING)
    files = sorted(CORPUS.rglob("qna.yaml"))
    with test_database():
        from django.contrib.auth.models import User
        from django.db import connection

        from curation.models import Leaf, LeafRevision, TaxonomyImport, TaxonomySnapshot
        from curation.services import ImportSource, taxonomy_import
        from curation.taxonomy.source import read_directory

        user = User.objects.create(username="bench")

        def empty():
            LeafRevision.objects.all().delete()
            Leaf.objects.all().delete()
            TaxonomyImport.objects.all().delete()
            TaxonomySnapshot.objects.all().delete()

        def run_import():
            record = taxonomy_import(source=ImportSource.directory(CORPUS), user=user, from_shell=True)
            assert record.rejected == 125, record.rejected

        baseline = best_of(1, lambda: official_validate(files))
        read_only = best_of(5, lambda: read_directory(CORPUS))
        first = best_of(5, run_import, setup=empty)
        again = best_of(5, run_import)
        assert Leaf.objects.count() == 301
        vendor = connection.vendor

    print(
        f"corpus: {len(files)} qna.yaml files, 301 imported, 125 rejected (124 invalid, 1 outside the roots); "
        f"database: {vendor}"
    )
    print(f"{'step':58} {'seconds':>8} {'vs baseline':>12}")
    rows = [
        ("baseline: instructlab-schema TaxonomyParser (validate only)", baseline),
        ("labweb: read + validate (no database)", read_only),
        ("labweb: full import into an empty database", first),
        ("labweb: re-import, nothing changed", again),
    ]
    for name, seconds in rows:
        print(f"{name:58} {seconds:8.3f} {baseline / seconds:11.1f}x")
    print(f"target: full import under 2 s -> {'met' if first < 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
