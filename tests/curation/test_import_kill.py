"""A worker killed in the middle of an import's writes leaves the taxonomy as it was; the reaper hands the job
to the next worker, which reads the source again and imports it exactly once."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from curation.models import ImportJob, Leaf, LeafRevision, TaxonomyImport, TaxonomySnapshot
from tests.curation.jobs import many_leaves, start_worker
from tests.support.worker import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
LEAVES = 2000


def test_killing_the_worker_mid_import_changes_nothing_and_the_next_worker_imports_it_once(api, tmp_path, settings):
    doomed = start_worker("doomed", tmp_path, settings)
    try:
        archive = SimpleUploadedFile("many.tar.gz", many_leaves(LEAVES), content_type="application/gzip")
        response = api.post("/api/imports/", {"archive": archive}, format="multipart")
        assert response.status_code == 202, response.json()
        job = ImportJob.objects.get(pk=response.json()["id"])
        # Killed once it has written batches of leaves (in its transaction) and has more to write.
        wait_for(
            lambda: ImportJob.objects.filter(pk=job.pk, leaves_written__gt=0, status="running").exists(),
            what="the import to have written its first batch",
            worker=doomed,
            timeout=180,
        )
    finally:
        doomed.kill()
    job.refresh_from_db()
    assert job.status == "running" and 0 < job.leaves_written < LEAVES, (job.status, job.leaves_written)
    assert not Leaf.objects.exists() and not LeafRevision.objects.exists()
    assert not TaxonomyImport.objects.exists() and not TaxonomySnapshot.objects.exists()

    heir = start_worker("heir", tmp_path, settings, beat=True)
    try:
        wait_for(
            lambda: ImportJob.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).exists(),
            what="the heir to finish the import",
            worker=heir,
            timeout=240,
        )
    finally:
        heir.kill()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.leaves_written) == ("succeeded", 2, LEAVES)
    assert list(job.events.order_by("created_at", "id").values_list("message", flat=True))[1:3] == [
        "Its worker stopped answering; nothing it did was kept, and the job is queued again.",
        "Attempt 2: reading the source again from the start.",
    ]
    record = TaxonomyImport.objects.get()
    assert (job.record_id, record.created, record.updated, record.rejected) == (record.pk, LEAVES, 0, 0)
    assert Leaf.objects.count() == LEAVES
    assert LeafRevision.objects.count() == LEAVES  # one revision a leaf: written once
    assert TaxonomySnapshot.objects.count() == 1
    assert not job.chunks.exists()
