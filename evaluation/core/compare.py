"""Per leaf: did the checkpoint improve on the base, regress, or neither, beyond a stated threshold?

Each measure has its own threshold in its own unit: the judge's mean rating (points of 1-10), multiple-choice
accuracy (a fraction) and held-out loss (nats per token, where lower is better). The verdict comes from what
measures answers, the judge and the multiple choices: a leaf regressed when either fell by more than its
threshold (forgetting is what an operator must see), improved when at least one rose by more than its threshold
and none fell, and is unchanged otherwise. Held-out loss decides only a leaf that has neither (a model that
learnt its leaf's answers well often grows less sure of unseen ones, which is not a regression of the leaf);
it is always reported. A leaf with no measure on both sides is `unmeasured`.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import fmean

IMPROVED, REGRESSED, UNCHANGED, UNMEASURED = "improved", "regressed", "unchanged", "unmeasured"
VERDICTS = (IMPROVED, UNCHANGED, REGRESSED, UNMEASURED)


@dataclass(frozen=True)
class Thresholds:
    judge: float = 0.5  # mean rating points
    choice: float = 0.05  # accuracy
    loss: float = 0.05  # nats per token

    def as_dict(self) -> dict:
        return {"judge": self.judge, "choice": self.choice, "loss": self.loss}


@dataclass
class Side:
    """One model's measures on one leaf."""

    ratings: list[float] = field(default_factory=list)
    unparseable: int = 0
    correct: int = 0
    choices: int = 0
    loss: float | None = None

    @property
    def judge(self) -> float | None:
        return fmean(self.ratings) if self.ratings else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.choices if self.choices else None


@dataclass(frozen=True)
class Comparison:
    verdict: str
    deltas: dict  # measure -> checkpoint minus base (None where either side is missing)


def delta(base: float | None, checkpoint: float | None) -> float | None:
    return None if base is None or checkpoint is None else checkpoint - base


def compare(base: Side, checkpoint: Side, thresholds: Thresholds = Thresholds()) -> Comparison:
    deltas = {
        "judge": delta(base.judge, checkpoint.judge),
        "choice": delta(base.accuracy, checkpoint.accuracy),
        "loss": delta(base.loss, checkpoint.loss),
    }
    # Gains in the direction that is better: a higher rating or accuracy, a lower loss.
    gains = {name: (-value if name == "loss" else value) for name, value in deltas.items() if value is not None}
    if len(gains) > 1:
        gains.pop("loss", None)
    if not gains:
        return Comparison(UNMEASURED, deltas)
    limits = thresholds.as_dict()
    if any(gain < -limits[name] for name, gain in gains.items()):
        return Comparison(REGRESSED, deltas)
    if any(gain > limits[name] for name, gain in gains.items()):
        return Comparison(IMPROVED, deltas)
    return Comparison(UNCHANGED, deltas)


def tally(verdicts: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for verdict in verdicts:
        counts[verdict] += 1
    return counts
