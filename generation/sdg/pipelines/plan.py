"""Planning a run: which units each leaf has, and how many samples each unit makes."""

from collections.abc import Iterable
from dataclasses import dataclass, field

from generation.sdg.chunking import chunk_document
from generation.sdg.pipelines.spec import KNOWLEDGE, LeafSpec, Unit


@dataclass(frozen=True)
class LeafSource:
    """A leaf as a run finds it. `spec` is None when the leaf does not validate; `problem` then says why."""

    path: str
    spec: LeafSpec | None
    documents: tuple[str, ...] = ()
    problem: str = ""


@dataclass(frozen=True)
class SkippedLeaf:
    path: str
    reason: str


@dataclass
class RunPlan:
    units: list[Unit] = field(default_factory=list)
    skipped: list[SkippedLeaf] = field(default_factory=list)
    leaves: int = 0  # leaves with units planned


def split_target(total: int, parts: int) -> list[int]:
    """`total` samples shared out over `parts` units as evenly as possible."""
    if parts <= 0:
        return []
    base, extra = divmod(max(0, total), parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def chunk_tokens(context_tokens: int) -> int:
    """How long a document chunk may be for a teacher of this context: half of it, less the prompt around it."""
    return max(256, context_tokens // 2 - 300)


def plan_run(
    leaves: Iterable[LeafSource], *, samples_per_leaf: int, context_tokens: int, min_seeds: int = 1
) -> RunPlan:
    """One unit per seed example of a skills leaf or per document chunk of a knowledge leaf, sharing out the
    leaf's samples; a unit left with none is not planned. Leaves that cannot be generated from are skipped
    with the reason, and the rest of the run goes ahead."""
    plan = RunPlan()
    for leaf in leaves:
        spec = leaf.spec
        if spec is None:
            plan.skipped.append(
                SkippedLeaf(leaf.path, f"the leaf is invalid ({leaf.problem or 'it does not validate'})")
            )
            continue
        if len(spec.seeds) < min_seeds:
            reason = f"the leaf has {len(spec.seeds)} seed examples; generation needs {min_seeds}"
            plan.skipped.append(SkippedLeaf(leaf.path, reason))
            continue
        if spec.kind == KNOWLEDGE:
            chunks = [
                chunk
                for document in leaf.documents
                for chunk in chunk_document(document, max_tokens=chunk_tokens(context_tokens))
            ]
            if not chunks:
                reason = "a knowledge leaf needs a source document to generate from; attach one"
                plan.skipped.append(SkippedLeaf(leaf.path, reason))
                continue
            places = [{"chunk_index": index, "chunk": chunk} for index, chunk in enumerate(chunks)]
        else:
            places = [{"seed_index": index} for index in range(len(spec.seeds))]
        plan.leaves += 1
        for place, target in zip(places, split_target(samples_per_leaf, len(places)), strict=True):
            if target:
                plan.units.append(Unit(leaf=spec, target=target, **place))
    return plan
