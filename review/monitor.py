"""Bulk review jobs on the operators' dashboard (registered in ReviewConfig.ready())."""

from dataclasses import dataclass

from labweb.monitor import JobKind, Progress


def job_progress(jobs: list) -> dict[int, Progress]:
    # done, undone and expected are kept on the job as chunks commit: no query.
    found = {}
    for job in jobs:
        if job.status == job.Status.UNDOING:
            found[job.pk] = Progress(job.undone, job.done, f"{job.undone:,} of {job.done:,} decisions taken back")
        else:
            found[job.pk] = Progress(job.done, job.expected, f"{job.done:,} of {job.expected:,} samples decided")
    return found


def _cancel(*, job, user):
    from review.services.bulk import bulk_cancel

    return bulk_cancel(job=job, user=user)


def _retry(*, job, user):
    from review.services.bulk import bulk_resume

    return bulk_resume(job=job, user=user)


@dataclass(frozen=True)
class BulkJobKind(JobKind):
    """A bulk job is at work while it is undone too ("undoing"), a status other kinds of job do not have."""

    def active(self, limit: int) -> list:
        rows = self.model.objects.filter(status__in=self.model.WORKING).select_related(*self.related)
        return list(rows.order_by("-status", "created_at", "id")[:limit])


def job_kind() -> JobKind:
    from review.models import BulkJob

    return BulkJobKind(
        name="bulk",
        label="Bulk review jobs",
        model=BulkJob,
        queue="default",
        url_name="review:bulk_job",
        progress=job_progress,
        cancel=_cancel,
        retry=_retry,
        related=("reviewer",),
    )
