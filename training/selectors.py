"""Reads of the training app."""

from django.db.models import QuerySet

from labweb.errors import LabError
from training.models import StepMetric, TrainingJob, TrainingPhase
from training.trainer.config import TrainConfig

PACE_STEPS = 10
DEFAULT_BATCH = TrainConfig.__dataclass_fields__["effective_batch_size"].default


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


def phase_pace(phase: TrainingPhase) -> tuple[StepMetric | None, float | None]:
    """The phase's last step (loss, learning rate, gradient norm, throughput, memory) and, while it runs, the
    seconds its remaining steps take at the pace of its last ten (their compute; checkpoints add to it)."""
    recent = list(phase.metrics.order_by("-step")[:PACE_STEPS])
    if not recent:
        return None, None
    if not phase.is_active or not phase.total_steps or not all(m.samples_per_second > 0 for m in recent):
        return recent[0], None
    batch = phase.config.get("effective_batch_size", DEFAULT_BATCH)
    per_step = sum(batch / m.samples_per_second for m in recent) / len(recent)
    return recent[0], max(0, phase.total_steps - phase.step) * per_step
