"""The judge's prompt, as MT-Bench-Branch asks it: a question, the reference answer from the taxonomy, the answer
under test; a rationale, then the rating 1-10 written as `[[rating]]`."""

import re
from dataclasses import dataclass

JUDGE_PROMPT_VERSION = "judge@1"
SYSTEM = (
    "You are an impartial judge of answers written by an AI assistant. Compare the assistant's answer with the "
    "reference answer: correctness first, then helpfulness, relevance and level of detail. Explain briefly, "
    "then rate."
)
TEMPLATE = """Rate the assistant's answer to the question below against the reference answer.

[Question]
{question}

[Reference answer]
{reference}

[The assistant's answer]
{answer}

Give a short rationale, then your rating from 1 (useless) to 10 (as good as the reference) on a line of its own,
exactly in this form: Rating: [[5]]"""

MIN_RATING, MAX_RATING = 1.0, 10.0
# The last [[n]] wins (a judge may quote the format before giving its own); a bare "Rating: 7" is accepted too.
_BRACKETS = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_PLAIN = re.compile(r"rating\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\**\s*$", re.I | re.M)


@dataclass(frozen=True)
class Judgement:
    rating: float | None  # None: the judge's text holds no rating in range (counted apart, never as a score)
    rationale: str


def judge_messages(*, question: str, reference: str, answer: str) -> list[dict]:
    user = TEMPLATE.format(question=question.strip(), reference=(reference or "(none)").strip(), answer=answer.strip())
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_judgement(text: str) -> Judgement:
    """The rating and the rationale before it; a rating outside 1-10 or none at all is unparseable."""
    text = (text or "").strip()
    found = list(_BRACKETS.finditer(text)) or list(_PLAIN.finditer(text))
    if not found:
        return Judgement(None, text)
    last = found[-1]
    value = float(last.group(1))
    rationale = (text[: last.start()].rstrip().removesuffix("Rating:").rstrip() or text).strip()
    if not MIN_RATING <= value <= MAX_RATING:
        return Judgement(None, text)
    return Judgement(value, rationale)
