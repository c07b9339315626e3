"""Multiple-choice questions made from a knowledge leaf, as MMLU-Branch measures knowledge without a judge.

Two sources, both from the leaf itself: its seed question-answer pairs (the right answer among other answers of
the leaf, then of other knowledge leaves, as distractors), and its documents (the true end of a sentence among
the ends of other sentences of the documents). Everything is chosen with a seeded generator from the content, so
the same leaf gives the same questions every time.
"""

import hashlib
import random
import re
from dataclasses import dataclass

CHOICES = 4
MIN_SENTENCE_WORDS = 8
DOCUMENT_QUESTIONS = 5
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MARKUP = re.compile(r"^[#>*\-\s|]+|[*_`]+", re.M)


@dataclass(frozen=True)
class ChoiceQuestion:
    key: str  # stable within the leaf: "seed-2-1", "doc-0-3"
    question: str
    choices: tuple[str, ...]
    correct: int

    def as_dict(self) -> dict:
        return {"key": self.key, "question": self.question, "choices": list(self.choices), "correct": self.correct}


def _rng(*parts: str) -> random.Random:
    return random.Random(hashlib.sha256("\x1f".join(parts).encode()).hexdigest())


def _with_distractors(key: str, question: str, right: str, pool: list[str], rng: random.Random):
    others = sorted({p for p in pool if p.strip() and p.strip() != right.strip()})
    if not others:
        return None
    picked = rng.sample(others, min(CHOICES - 1, len(others)))
    choices = [right, *picked]
    rng.shuffle(choices)
    return ChoiceQuestion(key, question, tuple(choices), choices.index(right))


def seed_questions(
    leaf: str, seeds: list[tuple[str | None, list[tuple[str, str]]]], other_answers: list[str]
) -> list[ChoiceQuestion]:
    """One question per seed pair; `seeds` is [(context, [(question, answer), ...])]."""
    own = [answer for _, pairs in seeds for _, answer in pairs]
    out = []
    for s, (context, pairs) in enumerate(seeds):
        for p, (question, answer) in enumerate(pairs):
            key = f"seed-{s}-{p}"
            pool = [a for a in own if a != answer] or other_answers
            text = f"{context.strip()}\n\n{question.strip()}" if context else question.strip()
            made = _with_distractors(key, text, answer.strip(), pool, _rng(leaf, key, question))
            if made:
                out.append(made)
    return out


def sentences(text: str) -> list[str]:
    flat = " ".join(_MARKUP.sub(" ", text).split())
    return [s for s in _SENTENCE.split(flat) if len(s.split()) >= MIN_SENTENCE_WORDS]


def document_questions(leaf: str, documents: list[tuple[str, str]], *, limit: int = DOCUMENT_QUESTIONS):
    """`documents` is [(name, text)]: up to `limit` questions "how does this sentence go on?"."""
    found = [(d, name, s) for d, (name, text) in enumerate(documents) for s in sentences(text)]
    if len(found) < 2:
        return []
    rng = _rng(leaf, "documents", *(s for _, _, s in found[:50]))
    chosen = sorted(rng.sample(range(len(found)), min(limit, len(found))))
    ends = [s.split()[len(s.split()) // 2 :] for _, _, s in found]
    out = []
    for index in chosen:
        d, name, sentence = found[index]
        words = sentence.split()
        start = " ".join(words[: len(words) // 2])
        right = " ".join(ends[index])
        pool = [" ".join(end) for n, end in enumerate(ends) if n != index]
        question = f"According to {name}, how does this sentence continue?\n\n{start} ..."
        made = _with_distractors(f"doc-{d}-{index}", question, right, pool, _rng(leaf, name, sentence))
        if made:
            out.append(made)
    return out
