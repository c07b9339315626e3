"""Near-duplicate detection with ROUGE-L (the F-measure of the longest common token subsequence)."""

import re
from collections.abc import Iterable, Iterator

from rapidfuzz.distance import LCSseq

_TOKEN = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def rouge_l(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    lcs = LCSseq.similarity(a, b)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(b), lcs / len(a)
    return 2 * precision * recall / (precision + recall)


class NearDuplicates:
    """Keeps texts that are not within `threshold` ROUGE-L of anything kept or known before."""

    def __init__(self, known: list[str] = (), threshold: float = 0.7):
        self.threshold = threshold
        self.kept = [tokens(text) for text in known]

    def admit(self, text: str) -> bool:
        return self.match(text) is None

    def match(self, text: str) -> int | None:
        """The index of the first kept text that `text` nearly repeats; else keep it and return None."""
        candidate = tokens(text)
        for index, other in enumerate(self.kept):
            if rouge_l(candidate, other) >= self.threshold:
                return index
        self.kept.append(candidate)
        return None


def earlier_repeats(texts: Iterable[str], threshold: float = 0.7) -> Iterator[int | None]:
    """For each text in order, the position of the earlier text it nearly repeats; None for a first."""
    seen, firsts = NearDuplicates(threshold=threshold), []
    for position, text in enumerate(texts):
        index = seen.match(text)
        if index is None:
            firsts.append(position)
            yield None
        else:
            yield firsts[index]
