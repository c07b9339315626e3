"""The mix a job's phases would train on, shown before it starts: samples and tokens per source and per leaf."""

from django.core.cache import cache

from labweb.errors import LabError
from training.models import Dataset
from training.services.datasets import dataset_phases, token_counter
from training.services.jobs import checked_phase, phase_seed, stored_recipe
from training.trainer.mixing import metadata_leaf, mix_counts


def job_mix(*, base_model: str, phases: list[dict]) -> list[dict]:
    """Per phase, what its recipe mixes with its seed, counted as the task will write it: samples and tokens per
    source in recipe order and per leaf (a blank leaf: samples whose metadata names none, as in a community set).
    Tokens are the base model's, with its chat template, where this process can load its tokenizer (else None).
    Checked as `job_create` checks; nothing is written."""
    if not (base_model or "").strip():
        raise LabError("A base model is required.", field="base_model")
    if not phases:
        raise LabError("A job needs at least one phase.", field="phases")
    checked = [checked_phase(index, phase) for index, phase in enumerate(phases)]
    try:
        count = token_counter(base_model.strip(), local_files_only=True)  # a web request downloads nothing
    except (LabError, ValueError):
        count = None
    result = []
    for index, (name, recipe, config) in enumerate(checked):
        local, names = stored_recipe(recipe, path=f"phases[{index}].recipe")
        shares = mix_counts(
            local,
            seed=phase_seed(config),
            tokens_of=count,
            leaf_of=metadata_leaf,
        )
        leaves: dict[str, list[int]] = {}
        for share in shares:
            for leaf, part in share.per_leaf.items():
                totals = leaves.setdefault(leaf, [0, 0])
                totals[0] += part.samples
                totals[1] += part.tokens

        def tokens(n: int) -> int | None:
            return n if count is not None else None

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


def dataset_mix(dataset: Dataset, *, base_model: str) -> list[dict]:
    """The mix Train on it would train on. A finished build never changes, so it is counted once (loading the
    tokenizer of the embedded model alone takes seconds) and kept in the shared cache."""
    key = f"training:dataset-mix:{dataset.pk}:{dataset.created_at.timestamp()}:{base_model}"  # not a new database's
    mix = cache.get(key)
    if mix is None:
        mix = job_mix(base_model=base_model, phases=dataset_phases(dataset, base_model=base_model))
        cache.set(key, mix, timeout=7 * 24 * 3600)
    return mix
