"""Generation runs on the operators' dashboard (registered in GenerationConfig.ready())."""

from labweb.monitor import JobKind, Progress


def run_progress(runs: list) -> dict[int, Progress]:
    from generation.selectors import run_totals

    progress = {}
    for run_id, totals in run_totals([run.pk for run in runs]).items():
        if totals["items"]:
            done, total = totals["finished"], totals["items"]
            progress[run_id] = Progress(done, total, f"{done} of {total} work items, {totals['kept']} samples kept")
    return progress


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
