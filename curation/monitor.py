"""Import jobs on the operators' dashboard (registered in CurationConfig.ready())."""

from labweb.monitor import JobKind, Progress


def job_progress(jobs: list) -> dict[int, Progress]:
    # The counts are kept on the job as its worker publishes them: no query.
    return {job.pk: Progress(job.leaves_validated, job.leaves_total, progress_text(job)) for job in jobs}


def progress_text(job) -> str:
    if not job.stage:
        return "waiting for a worker"
    text = f"{job.files_read} files read"
    if job.leaves_total:
        text += f" · {job.leaves_validated} of {job.leaves_total} leaves validated"
        if not job.dry_run:
            text += f" · {job.leaves_written} written"
    return text


def _cancel(*, job, user):
    from curation.services.imports.jobs import import_job_cancel

    return import_job_cancel(job=job, user=user)


def job_kind() -> JobKind:
    from curation.models import ImportJob

    return JobKind(
        name="imports",
        label="Taxonomy imports",
        model=ImportJob,
        queue="default",
        url_name="curation:import_job",
        progress=job_progress,
        cancel=_cancel,
    )
