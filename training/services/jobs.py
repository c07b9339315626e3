"""Training jobs: created with every setting checked, started, cancelled and resumed as a whole."""

from pathlib import Path

from django.conf import settings
from django.db import transaction

from labweb import jobs
from labweb.errors import ConflictError, LabError
from training import storage
from training.models import DatasetFile, TrainingEvent, TrainingJob, TrainingPhase
from training.trainer.config import TrainConfig
from training.trainer.mixing import HELD_OUT, Recipe, Source

# Settings a phase may set; model, data and output folder are LabWeb's to choose.
PHASE_SETTINGS = tuple(name for name in TrainConfig.__dataclass_fields__ if name not in ("model", "data", "output_dir"))


def storage_root() -> Path:
    """The training folder: trainer output and checkpoints (and the training storage, where no bucket is set)."""
    return Path(settings.LABWEB_TRAINING_DIR).resolve()


def built_sha256(name: str) -> str:
    """The sha256 a dataset build recorded for the stored file `name` ("" for an upload)."""
    return DatasetFile.objects.filter(path=name).values_list("sha256", flat=True).first() or ""


def stored_recipe(text: str, *, path: str) -> tuple[Recipe, dict[str, str]]:
    """A phase's recipe with its sources as files on this machine (from a bucket, copies checked against the
    hashes their builds recorded), and each such file's name in the training storage, as recipes name it."""
    recipe = Recipe.from_yaml(text, path=path)
    sources, names = [], {}
    for number, source in enumerate(recipe.sources):
        name = storage.clean_name(source.path)
        try:
            if name is None:
                raise LabError(f"{source.path} is outside the training storage.")
            local = str(storage.local_copy(name, sha256=built_sha256(name)))
        except LabError as error:
            raise LabError(error.message, field=f"{path}.datasets[{number}].path", path=source.path) from None
        names[local] = name
        sources.append(Source(local, source.sampling_size))
    return Recipe(tuple(sources), recipe.sys_prompt), names


def phase_seed(config: dict) -> int:
    """The seed a phase's mix is sampled with: the trainer's, so one number fixes the data and the training."""
    return config.get("seed", TrainConfig.__dataclass_fields__["seed"].default)


def event(job: TrainingJob, message: str, *, level: str = TrainingEvent.Level.INFO, phase=None) -> None:
    TrainingEvent.objects.create(job=job, phase=phase, level=level, message=message)


def checked_phase(index: int, phase: dict) -> tuple[str, str, dict]:
    where = f"phases[{index}]"
    name = (phase.get("name") or "").strip() or f"phase {index + 1}"
    config = dict(phase.get("config") or {})
    unknown = sorted(set(config) - set(PHASE_SETTINGS))
    if unknown:
        raise LabError(f"Unknown setting {unknown[0]!r}.", field=f"{where}.config.{unknown[0]}")
    try:
        TrainConfig.from_dict({**config, "model": "base", "data": ["data.jsonl"], "output_dir": "out"})
    except LabError as error:
        raise LabError(error.message, field=f"{where}.config.{error.field}") from None
    recipe_text = phase.get("recipe") or ""
    try:
        recipe = Recipe.from_yaml(recipe_text, path=f"{where}.recipe")
    except LabError as error:
        raise LabError(error.message, field=f"{where}.recipe", line=error.line) from None
    for number, source in enumerate(recipe.sources):
        where_path = f"{where}.recipe.datasets[{number}].path"
        stored = storage.clean_name(source.path)
        if stored is None:
            raise LabError(
                f"{source.path} is outside the training storage; upload it or build a dataset there.",
                field=where_path,
            )
        if not storage.exists(stored):
            raise LabError(f"{source.path} does not exist in the training storage.", field=where_path)
        if DatasetFile.objects.filter(path__in=storage.stored_as(stored), role=HELD_OUT).exists():
            raise LabError(
                f"{source.path} is a build's held-out split, kept out of training for evaluation.", field=where_path
            )
    return name, recipe_text, config


def _context_length(base_model: str, gguf_file: str) -> int | None:
    """The longest sequence the base model takes, where this process can read its configuration (a local folder
    or a hub name in the cache); None where only the training workers have the model."""
    if gguf_file or base_model.startswith("pypi:"):
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(base_model, local_files_only=True)
    except (OSError, ValueError):
        return None
    return getattr(config, "max_position_embeddings", None)


def _check_resources(checked: list[tuple[str, str, dict]], base_model: str, gguf_file: str, processes: int) -> None:
    """What a phase's settings cannot do with this model on this many processes, refused naming the field."""
    limit = _context_length(base_model, gguf_file)
    defaults = TrainConfig(model="", data=("",), output_dir="")
    for index, (_, _, config) in enumerate(checked):
        where = f"phases[{index}].config"
        if config.get("fsdp") and processes == 1:
            raise LabError(
                "FSDP shards the model over several processes; this job has one. Turn fsdp off.", field=f"{where}.fsdp"
            )
        batch = config.get("effective_batch_size", defaults.effective_batch_size)
        if batch < processes:
            raise LabError(
                f"effective_batch_size ({batch}) is smaller than the job's {processes} processes: some would have "
                "no sample in any step.",
                field=f"{where}.effective_batch_size",
            )
        length = config.get("max_seq_len", defaults.max_seq_len)
        if limit is not None and length > limit:
            raise LabError(
                f"max_seq_len ({length}) is longer than {base_model} takes ({limit} positions).",
                field=f"{where}.max_seq_len",
            )


@transaction.atomic
def job_create(
    *,
    name: str,
    base_model: str,
    phases: list[dict],
    user,
    gguf_file: str = "",
    plan: str = TrainingJob.Plan.CUSTOM,
    processes_per_node: int = 1,
    nodes: int = 1,
    start: bool = True,
) -> TrainingJob:
    """A job with its phases in order; each phase is {name, recipe (YAML), config (trainer settings)}.

    Everything is checked before anything is written: a refusal names the phase and field.
    """
    if not (base_model or "").strip():
        raise LabError("A base model is required.", field="base_model")
    if not phases:
        raise LabError("A job needs at least one phase.", field="phases")
    if processes_per_node < 1 or nodes < 1:
        raise LabError("A job needs at least one process on one node.", field="processes_per_node")
    checked = [checked_phase(index, phase) for index, phase in enumerate(phases)]
    _check_resources(checked, base_model.strip(), gguf_file, processes_per_node * nodes)
    job = TrainingJob.objects.create(
        name=name.strip() or base_model,
        base_model=base_model.strip(),
        gguf_file=gguf_file,
        plan=plan,
        processes_per_node=processes_per_node,
        nodes=nodes,
        created_by=user,
        output_dir="",
    )
    job.output_dir = str(storage_root() / "jobs" / f"job-{job.pk}")
    job.save(update_fields=["output_dir"])
    TrainingPhase.objects.bulk_create(
        TrainingPhase(job=job, order=index, name=name, recipe=recipe, config=config, created_by=user)
        for index, (name, recipe, config) in enumerate(checked)
    )
    event(job, f"Created by {user} with {len(checked)} phase(s) on {nodes} node(s) x {processes_per_node}.")
    if start:
        job_dispatch(job)
    return job


def job_dispatch(job: TrainingJob) -> None:
    """Queue the first phase not yet succeeded: one task per node rank, sent once the transaction commits."""
    phase = job.phases.exclude(status=jobs.Status.SUCCEEDED).order_by("order").first()
    if phase is None:
        return
    jobs.mark_sent(phase)
    for rank in range(job.nodes):
        jobs.send_task_on_commit("training.tasks.run_phase_node", phase.pk, rank)


@transaction.atomic
def job_cancel(*, job: TrainingJob, user) -> TrainingJob:
    """The running phase's trainer stops after its current step and saves a checkpoint and its full state."""
    jobs.transition(
        job,
        to=jobs.Status.CANCELLED,
        allowed=jobs.ACTIVE,
        refusal="The job is {status}; only a queued or running job can be cancelled.",
    )
    for phase in job.phases.filter(status__in=jobs.ACTIVE):
        Path(phase.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(phase.output_dir) / "STOP").touch()
        if phase.status == jobs.Status.QUEUED:
            jobs.transition(phase, to=jobs.Status.CANCELLED, allowed=[jobs.Status.QUEUED])
    event(
        job,
        f"Cancelled by {user}; the trainer saves a checkpoint after its current step.",
        level=TrainingEvent.Level.WARNING,
    )
    return job


@transaction.atomic
def job_resume(*, job: TrainingJob, user) -> TrainingJob:
    """Continue a cancelled or failed job from the last full state of its unfinished phase."""
    job = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if job.is_active:
        raise ConflictError("The job is still going; resume it once it stops.", field="status")
    phase = job.phases.exclude(status=jobs.Status.SUCCEEDED).order_by("order").first()
    if phase is None:
        raise ConflictError("Every phase of this job has succeeded; there is nothing to resume.", field="status")
    if phase.nodes.filter(lease_until__gt=jobs.lease_until(0)).exists():
        raise ConflictError("A worker still holds this phase; wait until it has stopped.", field="status")
    (Path(phase.output_dir) / "STOP").unlink(missing_ok=True)
    TrainingPhase.objects.filter(pk=phase.pk).update(
        status=jobs.Status.QUEUED, error="", exit_kind="", finished_at=None
    )
    phase.nodes.update(lease_owner="", lease_until=None, rendezvous="", exit_code=None, finished_at=None)
    TrainingJob.objects.filter(pk=job.pk).update(status=jobs.Status.QUEUED, error="", finished_at=None)
    event(job, f"Resumed by {user} at {phase.name} (step {phase.step}).", phase=phase)
    job.refresh_from_db()
    job_dispatch(job)
    return job
