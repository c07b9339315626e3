"""Datasets as InstructLab writes them: messages JSONL files, and recipes that mix them with replay.

A recipe is InstructLab's data-mixing YAML: a list of sources, each a JSONL path with a `sampling_size` (a float
is a fraction of that file, an integer a count; more than the file holds repeats it), sampled with a fixed seed.
Everything here streams: memory holds line indices, never the samples, so a build of a million samples stays
flat. The same inputs and seed give the same bytes, and the bytes' sha256 names the result.
"""

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from labweb.errors import LabError


@dataclass(frozen=True)
class Source:
    path: str
    sampling_size: float | int = 1.0


@dataclass(frozen=True)
class Recipe:
    sources: tuple[Source, ...]
    sys_prompt: str | None = None

    def to_yaml(self) -> str:
        body = {"datasets": [{"path": s.path, "sampling_size": s.sampling_size} for s in self.sources]}
        if self.sys_prompt is not None:
            body["metadata"] = {"sys_prompt": self.sys_prompt}
        return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, *, path: str = "recipe.yaml") -> "Recipe":
        try:
            body = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            raise LabError(
                f"Not YAML: {getattr(error, 'problem', error)}.", path=path, line=mark.line + 1 if mark else None
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("datasets"), list) or not body["datasets"]:
            raise LabError("A recipe needs a non-empty `datasets` list.", path=path, field="datasets")
        sources = []
        for index, entry in enumerate(body["datasets"]):
            where = f"datasets[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
                raise LabError("Each dataset needs a `path`.", path=path, field=f"{where}.path")
            size = entry.get("sampling_size", 1.0)
            check_sampling_size(size, field=f"{where}.sampling_size", path=path)
            sources.append(Source(entry["path"], size))
        metadata = body.get("metadata") or {}
        prompt = metadata.get("sys_prompt") if isinstance(metadata, dict) else None
        return cls(tuple(sources), prompt)


def check_sampling_size(size, *, field: str = "sampling_size", path: str | None = None) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size < 0 or math.isnan(size):
        raise LabError("sampling_size must be a fraction (0.5) or a count (200), not negative.", field=field, path=path)


def sample_count(size: float | int, available: int) -> int:
    """InstructLab's rule (instructlab-sdg's data mixing): 1 or 1.0 takes the whole source, another integer is a
    count, another float a fraction of what the source holds, rounded down."""
    if size == 1:
        return available
    return size if isinstance(size, int) else int(available * size)


def choose(available: int, size: float | int, seed: int) -> np.ndarray:
    """Line indices, in file order, for `size` of `available` lines; past 100% whole copies repeat."""
    wanted = sample_count(size, available)
    if available == 0 or wanted == 0:
        return np.zeros(0, dtype=np.int64)
    copies, rest = divmod(wanted, available)
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([np.tile(np.arange(available), copies), rng.choice(available, rest, replace=False)])
    return np.sort(chosen)


@dataclass
class Written:
    """What a file holds, counted while it was written."""

    path: str
    sha256: str = ""
    samples: int = 0
    bytes: int = 0
    per_leaf: Counter = field(default_factory=Counter)
    per_source: Counter = field(default_factory=Counter)
    sources: list[dict] = field(default_factory=list)  # a mix's sources in order: path, sha256, samples taken


class JsonlWriter:
    """Writes one JSON object a line, hashing the bytes as they go; keys keep their order, so bytes are stable."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.digest = hashlib.sha256()
        self.result = Written(str(self.path))

    def __enter__(self) -> "JsonlWriter":
        self.handle = self.partial.open("wb")
        return self

    def write(self, record: dict, *, leaf: str | None = None, source: str | None = None) -> None:
        self.write_line((json.dumps(record, ensure_ascii=False) + "\n").encode(), leaf=leaf, source=source)

    def write_line(self, line: bytes, *, leaf: str | None = None, source: str | None = None) -> None:
        self.handle.write(line)
        self.digest.update(line)
        self.result.samples += 1
        self.result.bytes += len(line)
        if leaf is not None:
            self.result.per_leaf[leaf] += 1
        if source is not None:
            self.result.per_source[source] += 1

    def __exit__(self, kind, value, tb) -> None:
        self.handle.close()
        if kind is None:
            self.partial.replace(self.path)  # a reader never sees half a file
            self.result.sha256 = self.digest.hexdigest()
        else:
            self.partial.unlink(missing_ok=True)


def count_lines(path: str) -> tuple[int, str]:
    """The samples a JSONL file holds, and the sha256 of its bytes (a source's identity in a checkpoint's lineage)."""
    digest, count = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for line in handle:
            digest.update(line)
            count += 1 if line.strip() else 0
    return count, digest.hexdigest()


def mix(recipe: Recipe, output: str | Path, *, seed: int, leaf_of=None) -> Written:
    """Write the recipe's mix to `output`: each source's chosen lines, sources in recipe order.

    `leaf_of(record) -> str | None` names a sample's leaf for the per-leaf counts (LabWeb's own files carry it
    in their metadata). The trainer shuffles every epoch, so the order here only has to be reproducible.
    """
    with JsonlWriter(output) as writer:
        for source, lines in _chosen(recipe, seed):
            writer.result.sources.append({"path": source.path, "sha256": lines.sha256, "samples": len(lines.chosen)})
            for number, _, line, repeats in lines:
                leaf = leaf_of(_record(line, source.path, number)) if leaf_of is not None else None
                for _ in range(repeats):
                    writer.write_line(line, leaf=leaf, source=source.path)
    return writer.result


@dataclass
class Share:
    samples: int = 0
    tokens: int = 0


@dataclass
class SourceShare(Share):
    path: str = ""
    sampling_size: float | int = 1.0
    available: int = 0
    per_leaf: dict[str, Share] = field(default_factory=dict)


def mix_counts(recipe: Recipe, *, seed: int, tokens_of=None, leaf_of=None, counted=None) -> list[SourceShare]:
    """What `mix` would write, counted and not written: per source (in recipe order) its samples and tokens, and
    the same per leaf. `tokens_of(record) -> int` counts a sample's tokens (None: tokens stay 0). `counted` maps a
    source's path to (its sha256, the tokens of each of its samples in order), as a dataset build counted them:
    such a source's tokens are summed from those, not counted again, while its bytes are still the ones counted."""
    shares = []
    for source, lines in _chosen(recipe, seed):
        share = SourceShare(path=source.path, sampling_size=source.sampling_size, available=lines.available)
        sha256, known = (counted or {}).get(source.path, (None, None))
        if sha256 != lines.sha256 or known is None or len(known) != lines.available:
            known = None
        count = tokens_of if known is None else None
        for number, index, line, repeats in lines:
            record = _record(line, source.path, number) if (count or leaf_of) else None
            leaf = leaf_of(record) if leaf_of is not None else None
            tokens = int(known[index]) if known is not None else count(record) if count is not None else 0
            for tally in (share, share.per_leaf.setdefault(leaf or "", Share())):
                tally.samples += repeats
                tally.tokens += repeats * tokens
        shares.append(share)
    return shares


class _Lines:
    """A source's chosen lines as (line number, index among its samples, line, times chosen), read in one pass;
    `available` is how many samples it holds."""

    def __init__(self, path: str, available: int, sha256: str, chosen: np.ndarray):
        self.path, self.available, self.sha256, self.chosen = path, available, sha256, chosen

    def __iter__(self):
        if not len(self.chosen):
            return
        position = 0
        with open(self.path, "rb") as handle:
            index = 0
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                repeats = 0
                while position < len(self.chosen) and self.chosen[position] == index:
                    repeats += 1
                    position += 1
                if repeats:
                    yield number, index, (line if line.endswith(b"\n") else line + b"\n"), repeats
                index += 1
                if position >= len(self.chosen):
                    return


def _chosen(recipe: Recipe, seed: int):
    for number, source in enumerate(recipe.sources):
        try:
            available, sha256 = count_lines(source.path)
        except OSError as error:
            raise LabError(
                f"Cannot read {source.path}: {error.strerror}.", field=f"datasets[{number}].path", path=source.path
            ) from None
        yield source, _Lines(source.path, available, sha256, choose(available, source.sampling_size, seed + number))


def _record(line: bytes, path: str, number: int) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        raise LabError("Not JSON.", path=path, line=number) from None


def metadata_leaf(record: dict) -> str | None:
    """The leaf a sample came from, where its metadata says (LabWeb's builds; InstructLab writes metadata as a
    JSON string, and community sets often have none)."""
    metadata = record.get("metadata") if isinstance(record, dict) else None
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            return None
    leaf = metadata.get("leaf") if isinstance(metadata, dict) else None
    return leaf if isinstance(leaf, str) else None


def held_out(ids_by_leaf: dict[str, list[int]], fraction: float, seed: int) -> set[int]:
    """Per leaf, round(fraction * n) samples kept out of training, chosen by a seeded hash of their ids: the same
    sample stays held out when others are added, so evaluation sets stay comparable between builds."""
    if not 0 <= fraction < 1:
        raise LabError("The held-out fraction must be at least 0 and below 1.", field="held_out_fraction")
    out: set[int] = set()
    for ids in ids_by_leaf.values():
        keep = int(round(len(ids) * fraction))
        if keep:
            ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
            out.update(ranked[:keep])
    return out


# Dataset builds: approved samples, leaf by leaf, into the files the phases of a plan train on.
PHASED, STACKED = "phased", "stacked"
KNOWLEDGE_SIMPLE, KNOWLEDGE_COMPLEX, SKILLS, ALL, HELD_OUT = (
    "knowledge_simple",
    "knowledge_complex",
    "skills",
    "all",
    "held_out",
)
FILES = {PHASED: (KNOWLEDGE_SIMPLE, KNOWLEDGE_COMPLEX, SKILLS, HELD_OUT), STACKED: (ALL, HELD_OUT)}


@dataclass(frozen=True)
class ApprovedSample:
    id: int
    leaf: str
    kind: str  # "knowledge" or "skills"
    question: str
    response: str
    context: str | None = None
    run: int | None = None


def sample_record(sample: ApprovedSample, system_prompt: str) -> dict:
    """A sample as InstructLab's training data holds it. Knowledge trains on the whole text (`unmask`)."""
    user = f"{sample.context}\n\n{sample.question}" if sample.context else sample.question
    return {
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user},
            {"role": "assistant", "content": sample.response},
        ],
        "unmask": sample.kind == "knowledge",
        "metadata": {"sample": sample.id, "leaf": sample.leaf, "kind": sample.kind, "run": sample.run},
    }


def role_of(sample: ApprovedSample, plan: str, complex_above_words: int) -> str:
    if plan == STACKED:
        return ALL
    if sample.kind != "knowledge":
        return SKILLS
    return KNOWLEDGE_COMPLEX if len(sample.response.split()) > complex_above_words else KNOWLEDGE_SIMPLE


def build_files(
    leaves,
    folder: str | Path,
    *,
    plan: str,
    seed: int,
    held_out_fraction: float,
    complex_above_words: int,
    system_prompt: str,
    on_sample=None,
) -> dict[str, Written]:
    """Write a plan's files from `leaves`: an iterable of (leaf path, its samples), in a stable order.

    One leaf is in memory at a time, so memory follows the largest leaf, not the dataset. Each leaf keeps
    round(fraction * n) samples out for evaluation (`held_out`), chosen by `held_out` above.
    `on_sample(sample, role, record)` hears of each sample written (lineage, token counts).
    """
    if plan not in FILES:
        raise LabError(f"plan must be {PHASED} or {STACKED}.", field="plan")
    folder = Path(folder)
    writers = {role: JsonlWriter(folder / f"{role}.jsonl") for role in FILES[plan]}
    for writer in writers.values():
        writer.__enter__()
    try:
        for leaf, samples in leaves:
            samples = list(samples)
            kept_out = held_out({leaf: [s.id for s in samples]}, held_out_fraction, seed)
            for sample in samples:
                role = HELD_OUT if sample.id in kept_out else role_of(sample, plan, complex_above_words)
                record = sample_record(sample, system_prompt)
                writers[role].write(record, leaf=leaf)
                if on_sample is not None:
                    on_sample(sample, role, record)
    except BaseException as error:
        for writer in writers.values():
            writer.__exit__(type(error), error, None)
        raise
    for writer in writers.values():
        writer.__exit__(None, None, None)
    return {role: writer.result for role, writer in writers.items()}


def phase_recipes(plan: str, files: dict[str, str]) -> list[tuple[str, Recipe]]:
    """LAB's phases over a build's files: knowledge simple, then complex replaying simple, then skills replaying
    all knowledge; or everything at once. `files` maps a role to its path as the recipe should name it, for the
    files that hold samples: a phase whose own file is missing is left out, and so is a missing replay source."""
    if plan == STACKED:
        return [("stacked", Recipe((Source(files[ALL]),)))] if ALL in files else []
    phases = [
        ("knowledge (simple)", KNOWLEDGE_SIMPLE, ()),
        ("knowledge (complex)", KNOWLEDGE_COMPLEX, (KNOWLEDGE_SIMPLE,)),
        ("skills", SKILLS, (KNOWLEDGE_SIMPLE, KNOWLEDGE_COMPLEX)),
    ]
    return [
        (name, Recipe(tuple(Source(files[role]) for role in (own, *replay) if role in files)))
        for name, own, replay in phases
        if own in files
    ]
