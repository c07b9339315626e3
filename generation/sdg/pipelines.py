"""The LAB pipelines, one unit of work at a time.

A unit is one seed example of a skills leaf or one chunk of a knowledge leaf. Within a unit every candidate
moves through its judge, respond and judge steps on its own, so the teacher always has work in flight
instead of waiting at a barrier between stages. Rounds repeat (with a new sampling seed) until the unit
reaches its target; what a round keeps is chosen in candidate order, so a resumed unit, replaying its
cached teacher answers, keeps exactly the same samples.
"""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from generation.sdg import parsing
from generation.sdg.dedup import NearDuplicates
from generation.sdg.parsing import MalformedOutput
from generation.sdg.prompts import load_prompt
from generation.sdg.teacher import CachedTeacher, Sampling, Shape, call_depth

SKILLS = "skills"
KNOWLEDGE = "knowledge"

# What each kind of answer looks like, for a teacher that steers its decoding (see teacher.Shape).
QUESTIONS = Shape(start="[Question]\n")
CONTEXTS = Shape(start="[Context]\n")

# How many calls wait on each prompt's answer, along the longest chain after it: the teacher's concurrency
# limit lets the deepest waiting call go first (see teacher.ConcurrencyLimit).
DEPTH = {
    "skills_contexts": 4,
    "skills_grounded_questions": 3,
    "skills_questions": 3,
    "question_judge": 2,
    "skills_response": 1,
    "knowledge_qa": 1,
}


@dataclass(frozen=True)
class Verdict:
    """How a judge ends its answer: "Score: N" with N in `scale`, or "Answer: YES|NO" where scale is None."""

    what: str
    scale: range | None = None

    def parse(self, text: str) -> int | bool:
        if self.scale is None:
            return parsing.yes_no(text, stage=self.what)
        return parsing.score(text, stage=self.what, allowed=self.scale)

    @property
    def shape(self) -> Shape:
        if self.scale is None:
            return Shape(verdict="Answer:", choices=(" YES", " NO"))
        return Shape(verdict="Score:", choices=tuple(f" {value}" for value in self.scale))


QUESTION_OK = Verdict("question judgement", range(0, 2))
RESPONSE_RATING = Verdict("response judgement", range(1, 4))
FAITHFUL = Verdict("faithfulness judgement")
RELEVANCE = Verdict("relevance judgement", range(0, 3))


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
    leaf: LeafSpec
    target: int
    seed_index: int | None = None
    chunk_index: int | None = None
    chunk: str | None = None


@dataclass
class Sample:
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


Emit = Callable[[list[Sample]], Awaitable[None]]
Progress = Callable[[str, str], None]


@dataclass
class UnitResult:
    kept: int = 0
    rounds: int = 0
    counts: Counter = field(default_factory=Counter)


class _Rejected(Exception):
    def __init__(self, stage: str, outcome: str = "rejected"):
        self.stage, self.outcome = stage, outcome


def _seed_examples(leaf: LeafSpec, first: int, how_many: int = 3) -> tuple[list[int], str]:
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


def _context_block(context: str | None) -> str:
    return f"\nContext:\n{context}\n" if context else ""


class UnitRunner:
    def __init__(
        self, unit: Unit, teacher: CachedTeacher, config: PipelineConfig, emit: Emit, progress: Progress | None = None
    ):
        self.unit, self.teacher, self.config, self.emit = unit, teacher, config, emit
        self.progress = progress or (lambda stage, outcome: None)
        self.result = UnitResult()
        self.dedup = NearDuplicates(unit.leaf.seed_questions, config.dedup_threshold)

    def _count(self, stage: str, outcome: str) -> None:
        self.result.counts[f"{stage}.{outcome}"] += 1
        self.progress(stage, outcome)

    async def _ask(
        self, prompt_name: str, sampling: Sampling, shape: Shape | None = None, **values
    ) -> tuple[str, bool, str]:
        prompt = load_prompt(prompt_name)
        depth = call_depth.set(DEPTH.get(prompt_name, 0))
        try:
            completion = await self.teacher.complete(prompt.messages(**values), sampling, shape)
        finally:
            call_depth.reset(depth)
        return completion.text, completion.finish_reason == "length", prompt.ref

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
            if self.unit.leaf.kind == KNOWLEDGE:
                candidates = await self._knowledge_round(round_number)
            else:
                candidates = await self._skills_round(round_number)
            kept = [sample for sample in candidates if sample is not None][:need]
            if kept:
                await self.emit(kept)
            self.result.kept += len(kept)
        return self.result

    async def _gather(self, chains) -> list[Sample | None]:
        outcomes = await asyncio.gather(*chains, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, _Rejected):
                raise outcome
        return [None if isinstance(o, BaseException) else o for o in outcomes]

    async def _skills_round(self, round_number: int) -> list[Sample | None]:
        leaf, unit = self.unit.leaf, self.unit
        seed_index = unit.seed_index or 0
        indices, examples = _seed_examples(leaf, seed_index)
        groups: list[tuple[str | None, list[str], dict, list[str]]] = []
        if leaf.grounded:
            text, cut, ref = await self._ask(
                "skills_contexts",
                self._sampling(self.config.sampling, round_number),
                CONTEXTS,
                task_description=leaf.task_description,
                context=leaf.seeds[seed_index]["context"],
                count=self._how_many(-(-self.need // self.config.questions_per_context), self.config.contexts_per_seed),
            )
            contexts = parsing.blocks(text, "Context", truncated=cut)
            self._count("contexts", "generated" if contexts else "malformed")
            example = f"[Question]\n{leaf.seeds[seed_index].get('question', '')}\n[End]"
            asks = [
                self._ask(
                    "skills_grounded_questions",
                    self._sampling(self.config.sampling, round_number, n + 1),
                    QUESTIONS,
                    task_description=leaf.task_description,
                    examples=example,
                    context=context,
                    count=self.config.questions_per_context,
                )
                for n, context in enumerate(contexts)
            ]
            for context, (q_text, q_cut, q_ref) in zip(contexts, await asyncio.gather(*asks), strict=True):
                groups.append(
                    (
                        context,
                        parsing.blocks(q_text, "Question", truncated=q_cut),
                        {"contexts": text, "questions": q_text},
                        [ref, q_ref],
                    )
                )
        else:
            text, cut, ref = await self._ask(
                "skills_questions",
                self._sampling(self.config.sampling, round_number),
                QUESTIONS,
                task_description=leaf.task_description,
                examples=examples,
                count=self._how_many(self.need, self.config.questions_per_call),
            )
            groups.append((None, parsing.blocks(text, "Question", truncated=cut), {"questions": text}, [ref]))

        chains = []
        for group_index, (context, questions, raw, refs) in enumerate(groups):
            if not questions:
                self._count("questions", "malformed")
            for question_index, question in enumerate(questions):
                key = f"r{round_number}-g{group_index}-q{question_index}"
                if not self.dedup.admit(question):
                    self._count("questions", "duplicate")
                    continue
                self._count("questions", "generated")
                chains.append(self._skills_chain(key, question, context, indices, raw, refs))
        return await self._gather(chains)

    async def _judge(self, stage: str, verdict: Verdict, prompt_name: str, **values) -> tuple[int | bool, str, str]:
        text, _, ref = await self._ask(prompt_name, self.config.judge_sampling, verdict.shape, **values)
        try:
            return verdict.parse(text), text, ref
        except MalformedOutput:
            self._count(stage, "malformed")
            raise _Rejected(stage, "malformed") from None

    async def _skills_chain(self, key, question, context, indices, raw, refs) -> Sample:
        leaf = self.unit.leaf
        block = _context_block(context)
        verdict, q_text, q_ref = await self._judge(
            "question_judge",
            QUESTION_OK,
            "question_judge",
            task_description=leaf.task_description,
            context_block=block,
            question=question,
        )
        if verdict < 1:
            self._count("question_judge", "rejected")
            raise _Rejected("question_judge")
        self._count("question_judge", "accepted")
        response, _, r_ref = await self._ask(
            "skills_response", self._sampling(self.config.sampling, 0, 17), context_block=block, question=question
        )
        if not response.strip():
            self._count("response", "malformed")
            raise _Rejected("response", "malformed")
        self._count("response", "generated")
        rating, p_text, p_ref = await self._judge(
            "pair_judge",
            RESPONSE_RATING,
            "pair_judge",
            task_description=leaf.task_description,
            context_block=block,
            question=question,
            response=response.strip(),
        )
        if rating < self.config.pair_threshold:
            self._count("pair_judge", "rejected")
            raise _Rejected("pair_judge")
        self._count("pair_judge", "accepted")
        return Sample(
            key=key,
            question=question,
            response=response.strip(),
            context=context,
            seed_indices=indices,
            chunk_index=None,
            scores={"question": verdict, "pair": rating},
            rationales={"question": parsing.rationale(q_text), "pair": parsing.rationale(p_text)},
            raw={**raw, "question_judge": q_text, "response": response, "pair_judge": p_text},
            prompts=[*refs, q_ref, r_ref, p_ref],
        )

    async def _knowledge_round(self, round_number: int) -> list[Sample | None]:
        leaf, unit = self.unit.leaf, self.unit
        indices, examples = _seed_examples(leaf, unit.chunk_index or 0, how_many=1)
        text, cut, ref = await self._ask(
            "knowledge_qa",
            self._sampling(self.config.sampling, round_number),
            QUESTIONS,
            domain=leaf.domain,
            document_outline=leaf.document_outline,
            examples=examples,
            chunk=unit.chunk,
            count=self._how_many(self.need, self.config.pairs_per_chunk),
        )
        pairs = parsing.qa_blocks(text, truncated=cut)
        if not pairs:
            self._count("questions", "malformed")
        chains = []
        for index, (question, answer) in enumerate(pairs):
            if not self.dedup.admit(question):
                self._count("questions", "duplicate")
                continue
            self._count("questions", "generated")
            chains.append(
                self._knowledge_chain(f"r{round_number}-q{index}", question, answer, indices, {"pairs": text}, [ref])
            )
        return await self._gather(chains)

    async def _knowledge_chain(self, key, question, answer, indices, raw, refs) -> Sample:
        leaf, chunk = self.unit.leaf, self.unit.chunk
        judged = await asyncio.gather(
            self._judge(
                "faithfulness",
                FAITHFUL,
                "knowledge_faithfulness",
                chunk=chunk,
                question=question,
                answer=answer,
            ),
            self._judge(
                "relevance",
                RELEVANCE,
                "knowledge_relevance",
                question=question,
                answer=answer,
            ),
            self._judge(
                "question_quality",
                QUESTION_OK,
                "knowledge_question",
                domain=leaf.domain,
                question=question,
            ),
            return_exceptions=True,
        )
        for outcome in judged:
            if isinstance(outcome, BaseException):
                raise outcome
        (faithful, f_text, f_ref), (relevance, r_text, r_ref), (quality, q_text, q_ref) = judged
        for stage, passed in (
            ("faithfulness", faithful),
            ("relevance", relevance >= self.config.relevance_threshold),
            ("question_quality", quality >= 1),
        ):
            if not passed:
                self._count(stage, "rejected")
                raise _Rejected(stage)
            self._count(stage, "accepted")
        return Sample(
            key=key,
            question=question,
            response=answer,
            context=chunk,
            seed_indices=indices,
            chunk_index=self.unit.chunk_index,
            scores={"faithful": bool(faithful), "relevance": relevance, "question": quality},
            rationales={
                "faithfulness": parsing.rationale(f_text),
                "relevance": parsing.rationale(r_text),
                "question": parsing.rationale(q_text),
            },
            raw={**raw, "faithfulness": f_text, "relevance": r_text, "question_quality": q_text},
            prompts=[*refs, f_ref, r_ref, q_ref],
        )


def split_target(total: int, parts: int) -> list[int]:
    """`total` samples shared out over `parts` units as evenly as possible."""
    if parts <= 0:
        return []
    base, extra = divmod(max(0, total), parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]
