"""Evaluation jobs on the operators' dashboard (registered in EvaluationConfig.ready())."""

from labweb.monitor import JobKind, Progress


def job_progress(jobs: list) -> dict[int, Progress]:
    # done and total are kept on the job as measurements are saved: no query.
    return {
        job.pk: Progress(
            job.done, job.total, f"{job.done} of {job.total} measurements{' · ' + job.stage if job.stage else ''}"
        )
        for job in jobs
    }


def _cancel(*, job, user):
    from evaluation.services.jobs import evaluation_cancel

    return evaluation_cancel(job=job, user=user)


def _retry(*, job, user):
    from evaluation.services.jobs import evaluation_resume

    return evaluation_resume(job=job, user=user)


def job_kind() -> JobKind:
    from evaluation.models import EvaluationJob

    return JobKind(
        name="evaluation",
        label="Evaluation jobs",
        model=EvaluationJob,
        queue="training",
        url_name="evaluation:job_detail",
        progress=job_progress,
        cancel=_cancel,
        retry=_retry,
    )
