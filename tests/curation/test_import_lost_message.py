"""An import job whose message the broker lost (a Redis restart keeps nothing) is sent again by the reaper once
LABWEB_QUEUED_RESEND_SECONDS have passed, and imports exactly once; a second message for it changes nothing."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from curation.models import ImportJob, Leaf, LeafRevision, TaxonomyImport, TaxonomySnapshot
from labweb.jobs import send_task
from tests.curation.jobs import many_leaves, start_worker
from tests.support.worker import drop_queued, reaped, reaper_rounds, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
LEAVES = 40


def test_an_import_job_whose_message_was_lost_is_sent_again_and_imports_once(api, queued, broker, tmp_path, settings):
    archive = SimpleUploadedFile("lost.tar.gz", many_leaves(LEAVES), content_type="application/gzip")
    response = api.post("/api/imports/", {"archive": archive}, format="multipart")
    assert response.status_code == 202, response.json()
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert drop_queued(broker, "default") == 1  # the job's message, gone with the broker's memory

    worker = start_worker("heir", tmp_path, settings, beat=True, LABWEB_QUEUED_RESEND_SECONDS="2")
    try:
        wait_for(
            lambda: ImportJob.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).exists(),
            what="the import sent again to finish",
            worker=worker,
            timeout=120,
        )
        # A second message for the finished job (a resend that crossed a slow worker's claim) is dropped.
        send_task("curation.tasks.run_import", job.pk)
        wait_for(
            lambda: f"'import job {job.pk} is succeeded'" in worker.log.read_text(),
            what="the second message to be dropped",
            worker=worker,
        )
        rounds = reaper_rounds(worker)
        wait_for(reaped(worker, rounds + 3), what="three more reaper rounds", worker=worker, timeout=30)
    finally:
        worker.kill()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.leaves_written, job.resends) == ("succeeded", 1, LEAVES, 1)
    messages = list(job.events.order_by("created_at", "id").values_list("message", flat=True))
    assert len(messages) == 3, messages
    assert messages[1].startswith("No worker took it in the ") and "sent again (1 time)" in messages[1]
    assert messages[2].startswith(f"Imported: {LEAVES} created")
    record = TaxonomyImport.objects.get()
    assert (job.record_id, record.created, record.updated) == (record.pk, LEAVES, 0)
    assert Leaf.objects.count() == LeafRevision.objects.count() == LEAVES  # one revision a leaf: written once
    assert TaxonomySnapshot.objects.count() == 1
