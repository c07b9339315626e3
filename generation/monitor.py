"""Generation runs on the operators' dashboard (registered in GenerationConfig.ready())."""

from django.db.models import Count, Q, Sum

from labweb.monitor import JobKind, Progress


def run_progress(runs: list) -> dict[int, Progress]:
    from generation.models import WorkItem

    finished = [WorkItem.State.DONE, WorkItem.State.FAILED, WorkItem.State.CANCELLED]
    rows = (
        WorkItem.objects.filter(run__in=[run.pk for run in runs])
        .values("run")
        .annotate(total=Count("id"), done=Count("id", filter=Q(state__in=finished)), kept=Sum("kept"))
    )
    return {
        row["run"]: Progress(
            row["done"], row["total"], f"{row['done']} of {row['total']} work items, {row['kept'] or 0} samples kept"
        )
        for row in rows
    }


def _cancel(*, job, user):
    from generation.services.runs import run_cancel

    return run_cancel(run=job, user=user)


def _retry(*, job, user):
    from generation.services.runs import run_resume

    return run_resume(run=job, user=user)


def job_kind() -> JobKind:
    from generation.models import GenerationRun

    return JobKind(
        name="generation",
        label="Generation runs",
        model=GenerationRun,
        queue="generation",
        url_name="generation:run_detail",
        progress=run_progress,
        cancel=_cancel,
        retry=_retry,
        related=("created_by", "teacher"),
    )
