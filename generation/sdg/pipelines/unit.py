"""Running one unit: rounds until its target, the teacher calls and judgements every pipeline makes.

Within a unit every candidate moves through its judge, respond and judge steps on its own, so the teacher
always has work in flight instead of waiting at a barrier between stages. Rounds repeat (with a new sampling
seed) until the unit reaches its target; what a round keeps is chosen in candidate order, so a resumed unit,
replaying its cached teacher answers, keeps exactly the same samples. The skills and knowledge pipelines say
what a round asks (`skills.py`, `knowledge.py`).
"""

import asyncio
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from generation.sdg.dedup import NearDuplicates
from generation.sdg.parsing import MalformedOutput
from generation.sdg.pipelines.shapes import Verdict
from generation.sdg.pipelines.spec import KNOWLEDGE, GeneratedSample, LeafSpec, PipelineConfig, Unit
from generation.sdg.prompts import load_prompt
from generation.sdg.teachers import CachedTeacher, Sampling, Shape, call_depth

# How many calls wait on each prompt's answer, along the longest chain after it: the teacher's concurrency
# limit lets the deepest waiting call go first (see teachers.ConcurrencyLimit).
DEPTH = {
    "skills_contexts": 4,
    "skills_grounded_questions": 3,
    "skills_questions": 3,
    "question_judge": 2,
    "skills_response": 1,
    "knowledge_qa": 1,
}


Emit = Callable[[list[GeneratedSample]], Awaitable[None]]


@dataclass
class UnitResult:
    kept: int = 0
    rounds: int = 0
    counts: Counter = field(default_factory=Counter)


class Rejected(Exception):
    def __init__(self, stage: str, outcome: str = "rejected"):
        self.stage, self.outcome = stage, outcome


def seed_examples(leaf: LeafSpec, first: int, how_many: int = 3) -> tuple[list[int], str]:
    count = min(how_many, len(leaf.seeds))
    indices = [(first + offset) % len(leaf.seeds) for offset in range(count)]
    parts = []
    for index in indices:
        seed = leaf.seeds[index]
        if leaf.kind == KNOWLEDGE:
            qas = "\n".join(
                f"[Question]\n{qa.get('question', '')}\n[Answer]\n{qa.get('answer', '')}\n[End]"
                for qa in seed.get("questions_and_answers") or []
            )
            parts.append(qas)
        else:
            parts.append(f"[Question]\n{seed.get('question', '')}\n[End]")
    return indices, "\n".join(parts)


def context_block(context: str | None) -> str:
    return f"\nContext:\n{context}\n" if context else ""


class UnitRunner(ABC):
    """What every pipeline's unit does; a subclass says what one round asks (`_round`)."""

    def __init__(self, unit: Unit, teacher: CachedTeacher, config: PipelineConfig, emit: Emit):
        self.unit, self.teacher, self.config, self.emit = unit, teacher, config, emit
        self.result = UnitResult()
        self.dedup = NearDuplicates(unit.leaf.seed_questions, config.dedup_threshold)

    def _count(self, stage: str, outcome: str) -> None:
        self.result.counts[f"{stage}.{outcome}"] += 1

    async def _ask(
        self, prompt_name: str, sampling: Sampling, shape: Shape | None = None, **values
    ) -> tuple[str, bool, str]:
        completion, ref = await self._complete(prompt_name, sampling, shape, **values)
        return completion.text, completion.finish_reason == "length", ref

    async def _complete(self, prompt_name: str, sampling: Sampling, shape: Shape | None, **values):
        prompt = load_prompt(prompt_name)
        depth = call_depth.set(DEPTH.get(prompt_name, 0))
        try:
            completion = await self.teacher.complete(prompt.messages(**values), sampling, shape)
        finally:
            call_depth.reset(depth)
        return completion, prompt.ref

    def _sampling(self, base: Sampling, round_number: int, salt: int = 0) -> Sampling:
        # A distinct seed per round and unit: the same prompt asked again must not return the same answer.
        seed = (
            (base.seed or 0)
            + round_number * 1_000_003
            + (self.unit.seed_index or 0) * 1009
            + (self.unit.chunk_index or 0) * 7919
            + salt
        )
        return replace(base, seed=seed)

    def _how_many(self, need: int, most: int) -> int:
        # Ask for half again what is still needed: judges reject some, and unused candidates cost calls.
        return max(2, min(most, -(-need * 3 // 2)))

    async def run(self) -> UnitResult:
        for round_number in range(self.config.max_rounds):
            need = self.unit.target - self.result.kept
            if need <= 0:
                break
            self.need = need
            self.result.rounds += 1
            candidates = await self._round(round_number)
            kept = [sample for sample in candidates if sample is not None][:need]
            if kept:
                await self.emit(kept)
            self.result.kept += len(kept)
        return self.result

    @abstractmethod
    async def _round(self, round_number: int) -> list[GeneratedSample | None]:
        """Every candidate of a round, in order: a sample, or None where a judge rejected it."""

    async def _gather(self, chains) -> list[GeneratedSample | None]:
        outcomes = await asyncio.gather(*chains, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Rejected):
                raise outcome
        return [None if isinstance(o, BaseException) else o for o in outcomes]

    async def _judge(
        self, stage: str, verdict: Verdict, prompt_name: str, steered: list[str], **values
    ) -> tuple[int | bool, str, str]:
        """The judge's verdict, its text and prompt; `stage` goes on `steered` when the verdict was LabWeb's."""
        completion, ref = await self._complete(prompt_name, self.config.judge_sampling, verdict.shape, **values)
        if completion.steered:
            steered.append(stage)
        try:
            return verdict.parse(completion.text), completion.text, ref
        except MalformedOutput:
            self._count(stage, "malformed")
            raise Rejected(stage, "malformed") from None
