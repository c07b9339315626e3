"""How long an upload of 20,000 small leaves holds its request now that the import is a job, against the import
that ran inside the request before (the same archive, the same run).

Run: .venv/bin/python bench/bench_import_job.py [LEAVES]   (PostgreSQL by default; REDIS_URL names the broker:
the job's task message is purged at the end, the job itself is run here, as a worker runs it)
"""

import io
import logging
import sys
import time

from _django import test_database


def archive(count: int) -> bytes:
    from curation.taxonomy.source import write_tar
    from tests.support.qna import POEMS

    files = [
        (f"compositional_skills/many/leaf_{n:05d}/qna.yaml", POEMS.replace(b"q1", f"question {n}".encode()))
        for n in range(count)
    ]
    buffer = io.BytesIO()
    write_tar(files, buffer)
    return buffer.getvalue()


def main() -> None:
    leaves = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    logging.disable(logging.WARNING)
    with test_database():
        from django.contrib.auth.models import Group, User
        from django.core.files.uploadedfile import SimpleUploadedFile
        from rest_framework.test import APIClient

        from curation.models import ImportJob, Leaf, LeafRevision, TaxonomyImport, TaxonomySnapshot
        from curation.services import ImportSource, taxonomy_import
        from curation.services.imports.jobs import import_job_run
        from labweb.celery import app

        user = User.objects.create(username="bench")
        user.groups.add(Group.objects.get_or_create(name="curator")[0])
        data = archive(leaves)

        def empty():
            for model in (LeafRevision, Leaf, TaxonomyImport, TaxonomySnapshot, ImportJob):
                model.objects.all().delete()

        # Warm up (schemas compiled, the database's caches filled) so that neither side pays for it.
        taxonomy_import(source=ImportSource.upload(io.BytesIO(archive(500)), "warm.tar.gz"), user=user)
        empty()
        start = time.perf_counter()
        record = taxonomy_import(source=ImportSource.upload(io.BytesIO(data), "many.tar.gz"), user=user)
        in_request = time.perf_counter() - start
        assert record.created == leaves, record.created
        empty()

        client = APIClient()
        client.force_authenticate(user)
        start = time.perf_counter()
        response = client.post(
            "/api/imports/", {"archive": SimpleUploadedFile("many.tar.gz", data)}, format="multipart"
        )
        request = time.perf_counter() - start
        assert response.status_code == 202, response.content[:300]
        start = time.perf_counter()
        import_job_run(job_id=response.json()["id"])
        job = time.perf_counter() - start
        assert TaxonomyImport.objects.get().created == leaves
        app.control.purge()

    print(f"{leaves} leaves, archive {len(data) / 1024 / 1024:.1f} MiB")
    print(f"{'step':52} {'seconds':>8} {'vs baseline':>12}")
    for name, seconds in (
        ("baseline: the import inside the request (before)", in_request),
        ("the request now: check, spool, queue (202)", request),
        ("the job on its worker", job),
    ):
        print(f"{name:52} {seconds:8.2f} {seconds / in_request:11.3f}x")


if __name__ == "__main__":
    main()
