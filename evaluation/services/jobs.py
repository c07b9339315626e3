"""Evaluation jobs: created for any checkpoint (or a named server model) with its base beside it, or after each
training phase; cancelled, resumed and reaped as every job is (labweb.jobs)."""

import logging
from collections import Counter

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from curation.models import Leaf
from evaluation.core.compare import Thresholds
from evaluation.models import EvaluationEvent, EvaluationJob, Measurement
from generation.models import Teacher
from generation.services.teachers import resolve_local_model, teacher_ensure_default
from labweb import jobs
from labweb.errors import ConflictError, LabError
from training import storage
from training.models import Checkpoint, DatasetFile, TrainingPhase
from training.trainer.mixing import Recipe

logger = logging.getLogger(__name__)
TASK = "evaluation.tasks.run_evaluation"
MAX_LEAVES = 20000


def event(job: EvaluationJob, message: str, *, level: str = EvaluationEvent.Level.INFO) -> None:
    EvaluationEvent.objects.create(job=job, level=level, message=message)


def phase_datasets(phase: TrainingPhase) -> list[DatasetFile]:
    """The dataset files a phase's recipe mixed (a recipe may also name uploads, which belong to no dataset)."""
    try:
        recipe = Recipe.from_yaml(phase.recipe, path=f"{phase.name} recipe")
    except LabError:
        return []
    paths = [form for s in recipe.sources if (name := storage.clean_name(s.path)) for form in storage.stored_as(name)]
    return list(DatasetFile.objects.select_related("dataset").exclude(role="held_out").filter(path__in=paths))


def phase_leaves(phase: TrainingPhase) -> list[str]:
    """The leaves whose samples the phase trained on; every leaf with seeds when its data came from no build."""
    files = phase_datasets(phase)
    trained = {leaf for f in files for leaf, roles in f.dataset.per_leaf.items() if roles.get(f.role)}
    return sorted(trained) or _all_leaves()


def _all_leaves() -> list[str]:
    paths = Leaf.objects.filter(seeds__isnull=False).distinct().order_by("path").values_list("path", flat=True)
    return list(paths)


def default_judge(dataset=None) -> Teacher:
    """The teacher of the run the data came from; else LABWEB_EVALUATION_JUDGE (a teacher's name); else the
    embedded teacher."""
    if dataset is not None and dataset.run_id and dataset.run.teacher_id:
        return dataset.run.teacher
    if dataset is not None:
        teachers = Counter(dataset.members.values_list("sample__teacher", flat=True)[:1000])
        teachers.pop(None, None)
        if teachers:
            return Teacher.objects.get(pk=teachers.most_common(1)[0][0])
    if settings.LABWEB_EVALUATION_JUDGE:
        found = Teacher.objects.filter(name=settings.LABWEB_EVALUATION_JUDGE).first()
        if found is not None:
            return found
    return teacher_ensure_default()


def _thresholds(values: dict | None) -> dict:
    merged = Thresholds().as_dict() | dict(values or {})
    unknown = set(merged) - set(Thresholds().as_dict())
    if unknown:
        raise LabError(f"Unknown threshold {sorted(unknown)[0]!r}.", field="thresholds")
    for name, value in merged.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 10:
            raise LabError(f"The {name} threshold must be a number from 0 to 10.", field=f"thresholds.{name}")
    return {name: float(value) for name, value in merged.items()}


@transaction.atomic
def evaluation_create(
    *,
    user,
    checkpoint: Checkpoint | None = None,
    model: str = "",
    base_model: str | None = None,
    backend: str = EvaluationJob.Backend.LOCAL,
    server_url: str = "",
    server_api_key: str = "",
    judge: Teacher | None = None,
    leaves: list[str] | None = None,
    sets: dict[str, list[str]] | None = None,
    dataset=None,
    thresholds: dict | None = None,
    max_new_tokens: int = 128,
    name: str = "",
    phase: TrainingPhase | None = None,
    start: bool = True,
) -> EvaluationJob:
    """Queue an evaluation of `checkpoint` (or of `model`, a folder or the server's model name), with its base
    (the training job's base model unless given; "" for none). `server_api_key` is what the server backend sends
    as its bearer token (kept write-only, as a teacher's key). Every argument is checked before anything is
    written."""
    if backend not in EvaluationJob.Backend.values:
        raise LabError(f"backend must be one of {', '.join(EvaluationJob.Backend.values)}.", field="backend")
    if backend == EvaluationJob.Backend.SERVER and not server_url.startswith(("http://", "https://")):
        raise LabError("A server backend needs its URL, starting with http:// or https://.", field="server_url")
    server_api_key = (server_api_key or "").strip()
    if server_api_key and backend != EvaluationJob.Backend.SERVER:
        raise LabError("An API key is sent only to a server: choose the server backend, or leave the key out.",
                       field="server_api_key")  # fmt: skip
    if len(server_api_key) > 500 or any(c.isspace() or not c.isprintable() for c in server_api_key):
        raise LabError("The server API key is at most 500 characters, with no spaces or line breaks.",
                       field="server_api_key")  # fmt: skip
    training_job = None
    base_gguf = ""
    if checkpoint is not None:
        phase = phase or checkpoint.phase
        training_job = checkpoint.phase.job
        model = model or checkpoint.path
        if base_model is None:
            base_model, base_gguf = training_job.base_model, training_job.gguf_file
        if dataset is None:
            files = phase_datasets(checkpoint.phase)
            dataset = files[0].dataset if files else None
    model = (model or "").strip()
    if not model:
        raise LabError(
            "Name the model under test: a checkpoint, a model folder or the server's model name.", field="model"
        )
    base_model = (base_model or "").strip()
    model_gguf = ""
    if backend == EvaluationJob.Backend.LOCAL:
        # A GGUF file (the embedded model's, or a training job's base) is kept apart from its folder: the worker
        # reads the Hugging Face folder made of it once (generation.services.teachers.local_model_source).
        model, model_gguf = resolve_local_model(model)
        if base_model:
            base_model, base_gguf = resolve_local_model(base_model, base_gguf)
    else:
        base_gguf = ""
    if not 1 <= max_new_tokens <= 4096:
        raise LabError("max_new_tokens must be from 1 to 4096.", field="max_new_tokens")
    if leaves:
        known = set(Leaf.objects.filter(path__in=leaves).values_list("path", flat=True))
        missing = [p for p in leaves if p not in known]
        if missing:
            raise LabError(f"No leaf {missing[0]} in the taxonomy.", field="leaves")
    else:
        leaves = sorted({p for paths in (sets or {}).values() for p in paths}) or (
            phase_leaves(checkpoint.phase) if checkpoint else _all_leaves()
        )
    if not leaves:
        raise LabError("There is no leaf with seed examples to evaluate on.", field="leaves")
    if len(leaves) > MAX_LEAVES:
        raise LabError(f"At most {MAX_LEAVES} leaves an evaluation.", field="leaves")
    judge = judge or default_judge(dataset)
    job = EvaluationJob.objects.create(
        name=name.strip()[:200] or (f"{checkpoint}" if checkpoint else model[-200:]),
        checkpoint=checkpoint,
        training_job=training_job,
        phase=phase,
        model=model,
        model_gguf=model_gguf or "",
        base_model=base_model,
        base_gguf=base_gguf or "",
        backend=backend,
        server_url=server_url,
        server_api_key=server_api_key,
        judge=judge,
        judge_config=judge.public_config(),
        dataset=dataset,
        leaves=sorted(set(leaves)),
        sets=sets or {"chosen": sorted(set(leaves))},
        thresholds=_thresholds(thresholds),
        max_new_tokens=max_new_tokens,
        created_by=user,
    )
    event(job, f"Created by {user or 'the training hook'}: {len(job.leaves)} leaves, judged by {judge.name}.")
    if start:
        jobs.send_task_on_commit(TASK, job.pk)
    return job


def evaluate_after_phase(phase: TrainingPhase) -> EvaluationJob | None:
    """The phase's last checkpoint on the leaves of this phase and of every phase before it (so what later
    phases made the model forget shows), one evaluation set per phase."""
    if not settings.LABWEB_EVALUATE_AFTER_PHASE:
        return None
    checkpoint = phase.checkpoints.order_by("-step", "-name").first()
    if checkpoint is None:
        return None
    sets = {
        earlier.name: phase_leaves(earlier)
        for earlier in phase.job.phases.filter(order__lte=phase.order).order_by("order")
    }
    return evaluation_create(
        user=None,
        checkpoint=checkpoint,
        sets=sets,
        name=f"{phase.job}: after {phase.name}",
        max_new_tokens=settings.LABWEB_EVALUATION_MAX_TOKENS,
    )


def on_phase_succeeded(sender, *, phase: TrainingPhase, **kwargs) -> None:
    try:
        evaluate_after_phase(phase)
    except LabError as error:  # an evaluation that cannot start never stops training
        logger.warning("No evaluation after %s: %s", phase, error)


@transaction.atomic
def evaluation_cancel(*, job: EvaluationJob, user) -> EvaluationJob:
    jobs.transition(
        job,
        to=jobs.Status.CANCELLED,
        allowed=jobs.ACTIVE,
        refusal="The evaluation is {status}; only a queued or running one can be cancelled.",
    )
    event(job, f"Cancelled by {user}; what was measured is kept.", level=EvaluationEvent.Level.WARNING)
    return job


@transaction.atomic
def evaluation_resume(*, job: EvaluationJob, user) -> EvaluationJob:
    """Go on from what was saved: answers kept, failed judgements asked again."""
    job = EvaluationJob.objects.select_for_update().get(pk=job.pk)
    if job.is_active:
        raise ConflictError("The evaluation is still going; resume it once it stops.", field="status")
    if job.status == jobs.Status.SUCCEEDED:
        raise ConflictError("The evaluation has finished; there is nothing to resume.", field="status")
    if job.lease_until and job.lease_until > timezone.now():
        raise ConflictError("A worker still holds this evaluation; wait until it has stopped.", field="status")
    job.measurements.exclude(error="").update(error="")
    EvaluationJob.objects.filter(pk=job.pk).update(
        status=jobs.Status.QUEUED, error="", finished_at=None, lease_owner="", lease_until=None
    )
    event(job, f"Resumed by {user}.")
    jobs.job_send_on_commit(job, TASK, job.pk)
    job.refresh_from_db()
    return job


def evaluations_reap() -> int:
    """Hand back running evaluations whose worker stopped renewing its lease, and send again those whose message
    no worker took (a second one finds the job held or finished: `evaluation_run` claims)."""

    return jobs.reap_kind(
        EvaluationJob.objects.filter(status__in=jobs.ACTIVE),
        warn=lambda job, message: event(job, message, level=EvaluationEvent.Level.WARNING),
        send=lambda job: jobs.send_task_on_commit(TASK, job.pk),
        lapsed="Its worker stopped answering; queued again.",
    )


def pending_measurements(job: EvaluationJob):
    return job.measurements.filter(
        Q(kind=Measurement.Kind.JUDGED, judged=False) | Q(kind=Measurement.Kind.CHOICE, picked__isnull=True)
    )
