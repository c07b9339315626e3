"""Dataset builds and training jobs on the operators' dashboard (registered in TrainingConfig.ready())."""

from labweb.monitor import JobKind, Progress


def job_progress(jobs: list) -> dict[int, Progress]:
    from training.models import TrainingPhase

    phases: dict[int, list] = {}
    for phase in TrainingPhase.objects.filter(job__in=[job.pk for job in jobs]).order_by("job", "order"):
        phases.setdefault(phase.job_id, []).append(phase)
    found = {}
    for job_id, rows in phases.items():
        current = next((p for p in rows if p.is_active), None) or rows[-1]
        number = rows.index(current) + 1
        steps = f"step {current.step} of {current.total_steps or '?'}, epoch {current.epoch}"
        found[job_id] = Progress(
            current.step, current.total_steps, f"phase {number} of {len(rows)} ({current.name}): {steps}"
        )
    return found


def dataset_progress(datasets: list) -> dict[int, Progress]:
    return {d.pk: Progress(0, 0, f"{d.samples:,} samples written") for d in datasets}


def _cancel(*, job, user):
    from training.services.jobs import job_cancel

    return job_cancel(job=job, user=user)


def _retry(*, job, user):
    from training.services.jobs import job_resume

    return job_resume(job=job, user=user)


def job_kinds() -> list[JobKind]:
    from training.models import Dataset, TrainingJob

    return [
        JobKind(
            name="dataset",
            label="Dataset builds",
            model=Dataset,
            queue="default",
            url_name="training:dataset_detail",
            progress=dataset_progress,
        ),
        JobKind(
            name="training",
            label="Training jobs",
            model=TrainingJob,
            queue="training",
            url_name="training:job_detail",
            progress=job_progress,
            cancel=_cancel,
            retry=_retry,
        ),
    ]
