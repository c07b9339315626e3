"""The knowledge pipeline: question-answer pairs from a document chunk, kept when judged faithful to the
chunk, relevant and well asked."""

import asyncio
import functools
from collections.abc import AsyncIterator

from generation.sdg import parsing
from generation.sdg.keepable import unkeepable
from generation.sdg.pipelines.shapes import FAITHFUL, QUESTION_ANSWERS, QUESTION_OK, RELEVANCE
from generation.sdg.pipelines.spec import GeneratedSample
from generation.sdg.pipelines.unit import Candidate, Rejected, UnitRunner, seed_examples


class KnowledgeUnitRunner(UnitRunner):
    async def _candidates(self, round_number: int) -> AsyncIterator[Candidate]:
        leaf, unit = self.unit.leaf, self.unit
        indices, examples = seed_examples(leaf, unit.chunk_index or 0, how_many=1)
        text, cut, ref = await self._ask(
            "knowledge_qa",
            self._sampling(self.config.sampling, round_number),
            QUESTION_ANSWERS,
            domain=leaf.domain,
            document_outline=leaf.document_outline,
            examples=examples,
            chunk=unit.chunk,
            count=self._how_many(self.need, self.config.pairs_per_chunk),
        )
        pairs = parsing.qa_blocks(text, truncated=cut)
        if not pairs:
            self._count("questions", "malformed")
        for index, (question, answer) in enumerate(pairs):
            if unkeepable(question, answer=False) or unkeepable(answer):
                self._count("questions", "unkeepable")  # however the judges would score it: never a sample
                continue
            if not self.dedup.admit(question):
                self._count("questions", "duplicate")
                continue
            self._count("questions", "generated")
            key = f"r{round_number}-q{index}"
            yield functools.partial(self._chain, key, question, answer, indices, {"pairs": text}, [ref])

    async def _chain(self, key, question, answer, indices, raw, refs) -> GeneratedSample:
        leaf, chunk = self.unit.leaf, self.unit.chunk
        steered: list[str] = []
        judged = await asyncio.gather(
            self._judge(
                "faithfulness",
                FAITHFUL,
                "knowledge_faithfulness",
                steered,
                chunk=chunk,
                question=question,
                answer=answer,
            ),
            self._judge(
                "relevance",
                RELEVANCE,
                "knowledge_relevance",
                steered,
                question=question,
                answer=answer,
            ),
            self._judge(
                "question_quality",
                QUESTION_OK,
                "knowledge_question",
                steered,
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
                raise Rejected(stage)
            self._count(stage, "accepted")
        return GeneratedSample(
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
            steered_verdicts=sorted(steered),  # in stage order, whichever judge answered first
        )
