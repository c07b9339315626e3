"""The mix a job's phases would train on, shown before it starts: samples and tokens per source and per leaf."""

import numpy as np
from django.core.cache import cache

from labweb.errors import LabError
from training import storage
from training.models import Dataset, DatasetFileTokens
from training.services.datasets import dataset_phases, token_counter
from training.services.jobs import checked_phase, phase_seed, stored_recipe
from training.trainer.mixing import metadata_leaf, mix_counts


def job_mix(*, base_model: str, phases: list[dict]) -> list[dict]:
    """Per phase, what its recipe mixes with its seed, counted as the task will write it: samples and tokens per
    source in recipe order and per leaf (a blank leaf: samples whose metadata names none, as in a community set).
    Tokens are the base model's, with its chat template: of a dataset build's file counted with that tokenizer,
    summed from what the build counted; of any other source (an upload, a build counted with another tokenizer),
    counted here where this process can load the tokenizer (else None). Checked as `job_create` checks; nothing is
    written."""
    if not (base_model or "").strip():
        raise LabError("A base model is required.", field="base_model")
    if not phases:
        raise LabError("A job needs at least one phase.", field="phases")
    base_model = base_model.strip()
    checked = [checked_phase(index, phase) for index, phase in enumerate(phases)]
    recipes = [stored_recipe(recipe, path=f"phases[{index}].recipe") for index, (_, recipe, _) in enumerate(checked)]
    counted = built_counts(base_model, {local: name for _, names in recipes for local, name in names.items()})
    count = _Counter(base_model)
    phase_shares = [
        mix_counts(local, seed=phase_seed(config), tokens_of=count, leaf_of=metadata_leaf, counted=counted)
        for (_, _, config), (local, _) in zip(checked, recipes, strict=True)
    ]
    result = []
    for (name, _, _), (_, names), shares in zip(checked, recipes, phase_shares, strict=True):
        leaves: dict[str, list[int]] = {}
        for share in shares:
            for leaf, part in share.per_leaf.items():
                totals = leaves.setdefault(leaf, [0, 0])
                totals[0] += part.samples
                totals[1] += part.tokens

        def tokens(n: int) -> int | None:
            return None if count.failed else n

        result.append(
            {
                "name": name,
                "samples": sum(share.samples for share in shares),
                "tokens": tokens(sum(share.tokens for share in shares)),
                "sources": [
                    {
                        "path": names[share.path],
                        "sampling_size": share.sampling_size,
                        "available": share.available,
                        "samples": share.samples,
                        "tokens": tokens(share.tokens),
                    }
                    for share in shares
                ],
                "leaves": [
                    {"leaf": leaf, "samples": samples, "tokens": tokens(n)}
                    for leaf, (samples, n) in sorted(leaves.items())
                ],
            }
        )
    return result


class _Counter:
    """The base model's token counter, loaded for the first sample that needs it: loading a tokenizer costs seconds
    (11 s for the embedded model's GGUF file on a busy box), which a mix of builds' files never pays."""

    def __init__(self, name: str):
        self.name, self.count, self.failed = name, None, False

    def __call__(self, record: dict) -> int:
        if self.count is None and not self.failed:
            try:
                self.count = token_counter(self.name, local_files_only=True)  # a web request downloads nothing
            except (LabError, ValueError):
                self.failed = True
        return self.count(record) if self.count is not None else 0


def built_counts(tokenizer: str, names: dict[str, str]) -> dict[str, tuple[str, np.ndarray]]:
    """For each source (its local path -> its name in the training storage) that a dataset build wrote and counted
    with `tokenizer`: (the file's sha256, the tokens of each of its samples), for `mix_counts`, which uses them only
    while the file still has that sha256."""
    by_name = {form: local for local, name in names.items() for form in storage.stored_as(name)}
    rows = DatasetFileTokens.objects.filter(file__path__in=list(by_name), file__dataset__tokenizer=tokenizer)
    return {
        by_name[path]: (sha256, np.frombuffer(bytes(counts), dtype="<u4"))
        for path, sha256, counts in rows.values_list("file__path", "file__sha256", "counts")
    }


def dataset_mix(dataset: Dataset, *, base_model: str) -> list[dict]:
    """The mix Train on it would train on. A finished build never changes, so it is counted once (loading the
    tokenizer of the embedded model alone takes seconds) and kept in the shared cache."""
    key = f"training:dataset-mix:{dataset.pk}:{dataset.created_at.timestamp()}:{base_model}"  # not a new database's
    mix = cache.get(key)
    if mix is None:
        mix = job_mix(base_model=base_model, phases=dataset_phases(dataset, base_model=base_model))
        cache.set(key, mix, timeout=7 * 24 * 3600)
    return mix
