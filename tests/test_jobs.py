"""The reaper's answer to a lost message (labweb.jobs.resend_unclaimed), on an import job queued through the API
with no worker: nothing is sent again within LABWEB_QUEUED_RESEND_SECONDS, then once, then only after twice as
long; a job a worker holds is never sent again this way, and a deliberate send starts the clock over."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from curation.models import ImportJob
from labweb import jobs
from tests.curation.jobs import many_leaves

pytestmark = pytest.mark.django_db
GRACE = 900  # the default


def queue_import(api) -> ImportJob:
    archive = SimpleUploadedFile("few.tar.gz", many_leaves(3), content_type="application/gzip")
    response = api.post("/api/imports/", {"archive": archive}, format="multipart")
    assert response.status_code == 202, response.json()
    return ImportJob.objects.get(pk=response.json()["id"])


def sent_ago(job: ImportJob, seconds: float) -> None:
    ImportJob.objects.filter(pk=job.pk).update(sent_at=timezone.now() - timedelta(seconds=seconds))


def test_a_queued_job_no_worker_took_is_sent_again_after_the_grace_then_after_twice_as_long(
    api, queued, broker, settings, django_capture_on_commit_callbacks
):
    assert settings.LABWEB_QUEUED_RESEND_SECONDS == GRACE
    with django_capture_on_commit_callbacks(execute=True):
        job = queue_import(api)
    assert broker.llen("default") == 1

    def reap() -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return jobs.reap_all()["imports"]

    assert reap() == 0  # merely waiting
    sent_ago(job, GRACE - 5)
    assert reap() == 0 and broker.llen("default") == 1
    sent_ago(job, GRACE + 5)
    assert reap() == 1 and broker.llen("default") == 2
    job.refresh_from_db()
    assert job.resends == 1 and timezone.now() - job.sent_at < timedelta(seconds=5)
    resent = job.events.filter(level="warning", message__startswith="No worker took it in the 90")
    assert resent.count() == 1 and "sent again (1 time)" in resent.get().message
    assert reap() == 0  # its new message is as young as can be

    sent_ago(job, GRACE + 5)
    assert reap() == 0  # the second wait is twice as long
    sent_ago(job, 2 * GRACE + 5)
    assert reap() == 1 and broker.llen("default") == 3
    job.refresh_from_db()
    assert job.resends == 2 and job.events.filter(message__contains="sent again (2 times)").count() == 1

    # A worker holds it: never sent again this way, however old its message (the lease decides, as ever).
    ImportJob.objects.filter(pk=job.pk).update(
        lease_owner="alive:1", lease_until=timezone.now() + timedelta(seconds=60), status="running"
    )
    sent_ago(job, 100 * GRACE)
    assert reap() == 0 and broker.llen("default") == 3

    # Its lease lapses: the hand-back sends it and starts the clock over.
    ImportJob.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert reap() == 1 and broker.llen("default") == 4
    job.refresh_from_db()
    assert (job.lease_owner, job.resends) == ("", 0) and timezone.now() - job.sent_at < timedelta(seconds=5)
    assert reap() == 0
