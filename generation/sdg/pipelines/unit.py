"""Running one unit: rounds until its target, the teacher calls and judgements every pipeline makes.

Within a unit every candidate moves through its judge, respond and judge steps on its own, so the teacher
always has work in flight instead of waiting at a barrier between stages. A round carries only as many
candidates as the unit still needs; a rejected one makes room for the next, and a round ends when the target
is met or its candidates are spent, so that with judges that accept, each kept sample costs its own chain and
its share of the generating calls, nothing more. Which candidates a round carries is the shortest prefix of
its candidates holding what the unit needs, whatever order their chains end in, so a resumed unit, replaying
its cached teacher answers, asks and keeps exactly the same. Rounds repeat (with a new sampling seed) until
the unit reaches its target. The skills and knowledge pipelines say what a round asks (`skills.py`,
`knowledge.py`).
"""

import asyncio
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
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
# A candidate not yet carried: called, it starts the candidate's chain, which returns its sample or raises Rejected.
Candidate = Callable[[], Awaitable[GeneratedSample]]


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


def ask_count(need: int, most: int, *, settled: int = 0, passed: int = 0) -> int:
    """Candidates a generating call asks for: half again what is still needed before any verdict; after,
    enough that the judges' pass rate so far (`passed` of `settled`) leaves `need`, plus a quarter. A spare
    that is never carried costs only its tokens; one too few costs another round."""
    if not settled:
        return max(2, min(most, -(-need * 3 // 2)))
    rate = max(0.1, passed / settled)
    return max(2, min(most, math.ceil(need * 1.25 / rate)))


def calls_if_accepted(unit: Unit, config: PipelineConfig) -> int:
    """The teacher calls a unit makes when every judge accepts and no question is a near-duplicate: each round's
    generating calls, then one chain a sample (question judge, response, pair judge; or three judges)."""
    calls, kept, settled = 0, 0, 0
    for _ in range(config.max_rounds):
        need = unit.target - kept
        if need <= 0:
            break
        if unit.leaf.kind == KNOWLEDGE:
            calls, found = calls + 1, ask_count(need, config.pairs_per_chunk, settled=settled, passed=settled)
        elif unit.leaf.grounded:
            per = config.questions_per_context
            contexts = ask_count(-(-need // per), config.contexts_per_seed, settled=settled, passed=settled)
            used = min(contexts, -(-need // per))  # a context's questions are asked for only when needed
            calls, found = calls + 1 + used, used * per
        else:
            calls, found = calls + 1, ask_count(need, config.questions_per_call, settled=settled, passed=settled)
        carried = min(need, found)
        calls, kept, settled = calls + 3 * carried, kept + carried, settled + carried
    return calls


def context_block(context: str | None) -> str:
    return f"\nContext:\n{context}\n" if context else ""


class UnitRunner(ABC):
    """What every pipeline's unit does; a subclass says what one round asks (`_round`)."""

    def __init__(self, unit: Unit, teacher: CachedTeacher, config: PipelineConfig, emit: Emit):
        self.unit, self.teacher, self.config, self.emit = unit, teacher, config, emit
        self.result = UnitResult()
        self.dedup = NearDuplicates(unit.leaf.seed_questions, config.dedup_threshold)
        self._settled = self._passed = 0  # candidates whose chains ended, and those of them kept

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
        return ask_count(need, most, settled=self._settled, passed=self._passed)

    async def run(self) -> UnitResult:
        for round_number in range(self.config.max_rounds):
            need = self.unit.target - self.result.kept
            if need <= 0:
                break
            self.need = need
            self.result.rounds += 1
            kept = await self._carry(self._candidates(round_number), need)
            if kept:
                await self.emit(kept)
            self.result.kept += len(kept)
        return self.result

    @abstractmethod
    def _candidates(self, round_number: int) -> AsyncIterator[Candidate]:
        """A round's candidates, in order; each is asked for (a generating call) only when it is pulled."""

    async def _carry(self, candidates: AsyncIterator[Candidate], need: int) -> list[GeneratedSample]:
        """Carry candidates through their chains, never more than `need` less those kept so far at once,
        until `need` are kept or none is left; the kept ones in candidate order."""
        kept: dict[int, GeneratedSample] = {}
        running: dict[asyncio.Future, int] = {}
        pulled, spent = 0, False
        try:
            while True:
                # In flight counts as kept until its chain says otherwise: a candidate is pulled only when the
                # ones before it cannot keep `need` however their chains end.
                while not spent and len(kept) + len(running) < need:
                    try:
                        candidate = await anext(candidates)
                    except StopAsyncIteration:
                        spent = True
                    else:
                        running[asyncio.ensure_future(candidate())] = pulled
                        pulled += 1
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in sorted(done, key=running.__getitem__):
                    position = running.pop(future)
                    try:
                        kept[position] = future.result()
                    except Rejected:
                        pass
                    else:
                        self._passed += 1
                    self._settled += 1
        finally:
            for future in running:
                future.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            await candidates.aclose()
        return [kept[position] for position in sorted(kept)]

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
