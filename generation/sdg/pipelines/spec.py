"""What a pipeline works from and what it makes: its configuration, a leaf, a unit, a generated sample."""

from dataclasses import dataclass, field

from generation.sdg.teachers import Sampling

SKILLS = "skills"
KNOWLEDGE = "knowledge"


@dataclass(frozen=True)
class PipelineConfig:
    sampling: Sampling = field(default_factory=Sampling)
    judge_sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=512))
    questions_per_call: int = 10
    contexts_per_seed: int = 3
    questions_per_context: int = 3
    pairs_per_chunk: int = 5
    max_rounds: int = 3
    pair_threshold: int = 2
    relevance_threshold: int = 2
    dedup_threshold: float = 0.7

    @classmethod
    def from_dict(cls, data: dict) -> "PipelineConfig":
        data = dict(data or {})
        sampling = Sampling(**data.pop("sampling", {}))
        judge = Sampling(**data.pop("judge_sampling", {"temperature": 0.0, "max_tokens": 512}))
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(sampling=sampling, judge_sampling=judge, **known)


@dataclass
class LeafSpec:
    path: str
    kind: str  # SKILLS or KNOWLEDGE
    seeds: list[dict]
    task_description: str = ""
    domain: str = ""
    document_outline: str = ""

    @property
    def grounded(self) -> bool:
        return self.kind == SKILLS and bool(self.seeds) and all(seed.get("context") for seed in self.seeds)

    @property
    def seed_questions(self) -> list[str]:
        if self.kind == KNOWLEDGE:
            return [qa.get("question", "") for seed in self.seeds for qa in seed.get("questions_and_answers") or []]
        return [seed.get("question", "") for seed in self.seeds]


@dataclass
class Unit:
    """One seed example of a skills leaf or one chunk of a knowledge leaf, and how many samples it makes."""

    leaf: LeafSpec
    target: int
    seed_index: int | None = None
    chunk_index: int | None = None
    chunk: str | None = None

    @property
    def name(self) -> str:
        """'seed N' or 'chunk N' (0-based): the unit's name within its leaf."""
        return f"seed {self.seed_index}" if self.seed_index is not None else f"chunk {self.chunk_index}"


@dataclass
class GeneratedSample:
    """A sample a unit kept: its judges passed it. `key` names it within the unit, the same on every replay."""

    key: str
    question: str
    response: str
    context: str | None
    seed_indices: list[int]
    chunk_index: int | None
    scores: dict
    rationales: dict
    raw: dict
    prompts: list[str]
    steered_verdicts: list[str] = field(default_factory=list)  # judges whose verdict LabWeb chose (Completion.steered)
