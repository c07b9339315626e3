"""What the teacher's answers look like: the tag an answer starts with, and the verdict line a judge ends with."""

from dataclasses import dataclass

from generation.sdg import parsing
from generation.sdg.teachers import Shape

# What each kind of answer looks like, for a teacher that can be held to it (see teachers.Shape).
QUESTIONS = Shape(start="[Question]\n", parts=("Question",))
QUESTION_ANSWERS = Shape(start="[Question]\n", parts=("Question", "Answer"))
CONTEXTS = Shape(start="[Context]\n", parts=("Context",))


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
        # Choices run from the most rejecting to the most accepting (see teachers.Shape).
        if self.scale is None:
            return Shape(verdict="Answer:", choices=(" NO", " YES"))
        return Shape(verdict="Score:", choices=tuple(f" {value}" for value in self.scale))


QUESTION_OK = Verdict("question judgement", range(0, 2))
RESPONSE_RATING = Verdict("response judgement", range(1, 4))
FAITHFUL = Verdict("faithfulness judgement")
RELEVANCE = Verdict("relevance judgement", range(0, 3))
