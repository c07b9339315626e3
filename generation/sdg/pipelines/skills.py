"""The skills pipeline: questions from the seed examples (new contexts first for grounded skills), each
judged, answered and the pair judged (score 1-3, kept from `pair_threshold`)."""

import functools
from collections.abc import AsyncIterator, Iterator

from generation.sdg import parsing
from generation.sdg.keepable import unkeepable
from generation.sdg.pipelines.shapes import CONTEXTS, QUESTION_OK, QUESTIONS, RESPONSE_RATING
from generation.sdg.pipelines.spec import GeneratedSample
from generation.sdg.pipelines.unit import Candidate, Rejected, UnitRunner, context_block, seed_examples


class SkillsUnitRunner(UnitRunner):
    async def _candidates(self, round_number: int) -> AsyncIterator[Candidate]:
        leaf, unit = self.unit.leaf, self.unit
        seed_index = unit.seed_index or 0
        indices, examples = seed_examples(leaf, seed_index)
        if not leaf.grounded:
            text, cut, ref = await self._ask(
                "skills_questions",
                self._sampling(self.config.sampling, round_number),
                QUESTIONS,
                task_description=leaf.task_description,
                examples=examples,
                count=self._how_many(self.need, self.config.questions_per_call),
            )
            questions = parsing.blocks(text, "Question", truncated=cut)
            for candidate in self._group(round_number, 0, None, questions, indices, {"questions": text}, [ref]):
                yield candidate
            return
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
        # A sample carries its context to review: one a person would not keep is never asked about.
        kept = [context for context in contexts if not unkeepable(context, answer=False)]
        for _ in range(len(contexts) - len(kept)):
            self._count("contexts", "unkeepable")
        contexts = kept
        example = f"[Question]\n{leaf.seeds[seed_index].get('question', '')}\n[End]"
        # A context's questions are asked for only when the contexts before it have not given enough.
        for n, context in enumerate(contexts):
            q_text, q_cut, q_ref = await self._ask(
                "skills_grounded_questions",
                self._sampling(self.config.sampling, round_number, n + 1),
                QUESTIONS,
                task_description=leaf.task_description,
                examples=example,
                context=context,
                count=self.config.questions_per_context,
            )
            questions = parsing.blocks(q_text, "Question", truncated=q_cut)
            raw = {"contexts": text, "questions": q_text}
            for candidate in self._group(round_number, n, context, questions, indices, raw, [ref, q_ref]):
                yield candidate

    def _group(self, round_number, group_index, context, questions, indices, raw, refs) -> Iterator[Candidate]:
        if not questions:
            self._count("questions", "malformed")
        for question_index, question in enumerate(questions):
            if unkeepable(question, answer=False):
                self._count("questions", "unkeepable")  # however the judges would score it: never judged
                continue
            if not self.dedup.admit(question):
                self._count("questions", "duplicate")
                continue
            self._count("questions", "generated")
            key = f"r{round_number}-g{group_index}-q{question_index}"
            yield functools.partial(self._chain, key, question, context, indices, raw, refs)

    async def _chain(self, key, question, context, indices, raw, refs) -> GeneratedSample:
        leaf = self.unit.leaf
        block = context_block(context)
        steered: list[str] = []
        verdict, q_text, q_ref = await self._judge(
            "question_judge",
            QUESTION_OK,
            "question_judge",
            steered,
            task_description=leaf.task_description,
            context_block=block,
            question=question,
        )
        if verdict < 1:
            self._count("question_judge", "rejected")
            raise Rejected("question_judge")
        self._count("question_judge", "accepted")
        response, r_cut, r_ref = await self._ask(
            "skills_response", self._sampling(self.config.sampling, 0, 17), context_block=block, question=question
        )
        if not response.strip():
            self._count("response", "malformed")
            raise Rejected("response", "malformed")
        if unkeepable(response, truncated=r_cut):
            # Not text a person would keep, however the judges score it: never a sample.
            self._count("response", "unkeepable")
            raise Rejected("response", "unkeepable")
        self._count("response", "generated")
        rating, p_text, p_ref = await self._judge(
            "pair_judge",
            RESPONSE_RATING,
            "pair_judge",
            steered,
            task_description=leaf.task_description,
            context_block=block,
            question=question,
            response=response.strip(),
        )
        if rating < self.config.pair_threshold:
            self._count("pair_judge", "rejected")
            raise Rejected("pair_judge")
        self._count("pair_judge", "accepted")
        return GeneratedSample(
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
            steered_verdicts=steered,
        )
