"""Agreement between reviewers on nominal labels: Cohen's kappa for two, Krippendorff's alpha for any number."""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Kappa of two raters over the units both labelled, given as (label of A, label of B).

    None when it is undefined: no units, or both raters always chose one and the same label (chance agreement 1).
    """
    n = len(pairs)
    if not n:
        return None
    observed = sum(1 for a, b in pairs if a == b) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[label] * second[label] for label in first) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def krippendorff_alpha(units: Iterable[Mapping[str, str] | Sequence[str]]) -> float | None:
    """Alpha (nominal) over units, each the labels its raters gave (a mapping rater -> label, or a list).

    Units with fewer than two labels carry no pairing and are left out, as the coefficient defines. None when
    undefined: fewer than two pairable values, or a single label used throughout (no expected disagreement).
    """
    coincidences: Counter = Counter()
    for unit in units:
        labels = list(unit.values()) if isinstance(unit, Mapping) else list(unit)
        m = len(labels)
        if m < 2:
            continue
        counts = Counter(labels)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_k - 1) if c == k else n_c * n_k
                if pairs:
                    coincidences[(c, k)] += pairs / (m - 1)
    totals: Counter = Counter()
    for (c, _), value in coincidences.items():
        totals[c] += value
    n = sum(totals.values())
    if n < 2:
        return None
    observed = sum(value for (c, k), value in coincidences.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n - 1)
    if expected == 0:
        return None
    return 1 - observed / expected
