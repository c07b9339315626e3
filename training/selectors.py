"""Reads of the training app."""

from django.db.models import QuerySet

from labweb.errors import LabError
from training.models import StepMetric, TrainingJob


def int_param(params, name: str, *, default: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LabError(f"{name} must be a whole number, not {raw!r}.", field=name) from None
    if not 0 <= value < 2**31:
        raise LabError(f"{name} must be between 0 and {2**31 - 1}.", field=name)
    return value


def job_metrics(job: TrainingJob, *, phase_id: int | None = None, after: int = 0) -> QuerySet[StepMetric]:
    metrics = StepMetric.objects.filter(phase__job=job).order_by("phase__order", "step")
    if phase_id is not None:
        metrics = metrics.filter(phase_id=phase_id, step__gt=after)
    return metrics
