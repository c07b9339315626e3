"""Reads of review: a sample with everything a reviewer weighs, progress from the counters, agreement."""

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from django.db.models import Q, Sum

from review.core import rules
from review.core.agreement import cohen_kappa, krippendorff_alpha
from review.core.diff import word_diff
from review.models import Counter, ReviewItem, Vote
from review.queue import Queue, after


def item_for_screen(sample_id: int) -> ReviewItem | None:
    return (
        ReviewItem.objects.select_related("sample", "sample__item", "sample__teacher", "decision__reviewer")
        .select_related("claimed_by")
        .filter(pk=sample_id)
        .first()
    )


def seed_examples(item: ReviewItem) -> list[dict]:
    """The leaf's seed examples the sample was generated from, as the run froze them (positions from 1)."""
    spec = item.sample.item.spec or {}
    seeds = (spec.get("leaf") or {}).get("seeds") or []
    used = set(item.sample.seed_indices or [])
    shown = []
    for index, seed in enumerate(seeds):
        if used and index not in used:
            continue
        pairs = seed.get("questions_and_answers")
        if pairs:
            shown += [
                {"position": index + 1, "question": p.get("question", ""), "answer": p.get("answer", "")} for p in pairs
            ]
        else:
            shown.append(
                {
                    "position": index + 1,
                    "question": seed.get("question", ""),
                    "answer": seed.get("answer", ""),
                    "context": seed.get("context") or "",
                }
            )
    return shown


def item_diff(item: ReviewItem) -> dict | None:
    """Word diffs of the text in force against the sample's original, or None when nobody edited it."""
    if not item.edited:
        return None
    sample = item.sample
    return {
        "question": word_diff(sample.question, item.question if item.question is not None else sample.question),
        "response": word_diff(sample.response, item.response if item.response is not None else sample.response),
    }


def neighbours(item: ReviewItem, queue: Queue, *, reviewer) -> tuple[ReviewItem | None, ReviewItem | None]:
    """The samples around `item` in the queue's order: the next one the queue still offers, and the one just
    before it whatever its state (so a reviewer can step back to what they just decided)."""
    from dataclasses import replace

    order = queue.order
    key = [getattr(item, name.lstrip("-")) for name in order]
    flipped = [o[1:] if o.startswith("-") else f"-{o}" for o in order]
    following = after(queue.queryset(reviewer=reviewer).exclude(pk=item.pk), order, key).order_by(*order).first()
    behind = replace(queue, state="any").queryset().exclude(pk=item.pk)
    previous = after(behind, order, key, backwards=True).order_by(*flipped).first()
    return previous, following


def first_in_queue(queue: Queue, *, reviewer) -> ReviewItem | None:
    return queue.queryset(reviewer=reviewer).order_by(*queue.order).first()


# --- progress -------------------------------------------------------------------------------------------------


@dataclass
class Progress:
    label: str
    pending: int = 0
    approved: int = 0
    rejected: int = 0
    edited: int = 0

    @property
    def decided(self) -> int:
        return self.approved + self.rejected + self.edited

    @property
    def total(self) -> int:
        return self.pending + self.decided

    @property
    def acceptance(self) -> float | None:
        """Approved (edited included) of all decided; None before the first decision."""
        return round((self.approved + self.edited) / self.decided, 4) if self.decided else None

    @property
    def percent(self) -> int:
        return int(100 * self.decided / self.total) if self.total else 0

    def add(self, row) -> None:
        for name in ("pending", "approved", "rejected", "edited"):
            setattr(self, name, getattr(self, name) + (row[name] or 0))

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "pending": self.pending,
            "approved": self.approved,
            "rejected": self.rejected,
            "edited": self.edited,
            "decided": self.decided,
            "total": self.total,
            "acceptance_rate": self.acceptance,
        }


def _counters(*, run: int | None = None, path: str = ""):
    counters = Counter.objects.all()
    if run:
        counters = counters.filter(run_id=run)
    if path:
        from review.queue import under_path

        counters = under_path(counters, path)
    return counters


def progress(*, run: int | None = None, path: str = "") -> dict:
    """Totals, per leaf and per branch (every folder above a leaf), from the counters: no sample is counted."""
    rows = (
        _counters(run=run, path=path)
        .order_by("leaf_path")
        .values("leaf_path")
        .annotate(**{n: Sum(n) for n in ("pending", "approved", "rejected", "edited")})
    )
    total = Progress("all")
    leaves: list[Progress] = []
    branches: dict[str, Progress] = {}
    for row in rows:
        leaf = Progress(row["leaf_path"])
        leaf.add(row)
        leaves.append(leaf)
        total.add(row)
        parts = row["leaf_path"].split("/")
        for end in range(1, len(parts)):
            branch = "/".join(parts[:end])
            branches.setdefault(branch, Progress(branch)).add(row)
    return {"total": total, "leaves": leaves, "branches": [branches[k] for k in sorted(branches)]}


def leaf_counts(leaf_ids) -> dict[int, dict[str, int]]:
    """Per curation leaf id, summed over runs: the counters the taxonomy tree shows."""
    rows = (
        Counter.objects.filter(leaf_id__in=list(leaf_ids))
        .order_by()
        .values("leaf_id")
        .annotate(**{n: Sum(n) for n in ("pending", "approved", "rejected", "edited")})
    )
    return {row.pop("leaf_id"): row for row in rows}


# --- agreement ------------------------------------------------------------------------------------------------


def _label(action: str) -> str:
    return rules.REJECT if action == rules.REJECT else rules.APPROVE  # an edit keeps the sample: it agrees with approve


@dataclass
class Agreement:
    leaves: list[dict] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)
    overall: float | None = None
    items: int = 0


def agreement(*, run: int | None = None, path: str = "", limit: int = 200_000) -> Agreement:
    """Agreement of the standing votes on samples that need several reviewers (keep vs reject).

    Per leaf: Cohen's kappa when its samples have two reviewers, Krippendorff's alpha when more. Per reviewer
    pair: Cohen's kappa over the samples both voted on.
    """
    votes = Vote.objects.select_related("reviewer").order_by("item_id")
    if run:
        votes = votes.filter(item__run_id=run)
    if path:
        path = path.strip("/")
        votes = votes.filter(Q(item__leaf_path=path) | Q(item__leaf_path__startswith=path + "/"))
    units: dict[int, dict[str, str]] = defaultdict(dict)
    leaf_of: dict[int, str] = {}
    required: dict[int, int] = {}
    for item_id, leaf_path, k, reviewer, action in votes.values_list(
        "item_id", "item__leaf_path", "item__required", "reviewer__username", "action"
    )[:limit]:
        units[item_id][reviewer] = _label(action)
        leaf_of[item_id] = leaf_path
        required[item_id] = k
    result = Agreement(items=len(units))
    by_leaf: dict[str, list[int]] = defaultdict(list)
    for item_id in units:
        by_leaf[leaf_of[item_id]].append(item_id)
    for leaf_path in sorted(by_leaf):
        ids = by_leaf[leaf_path]
        k = max(required[i] for i in ids)
        if k > 2:
            value, measure = krippendorff_alpha([units[i] for i in ids]), "krippendorff_alpha"
        else:
            pairs = [tuple(units[i].values())[:2] for i in ids if len(units[i]) >= 2]
            value, measure = cohen_kappa(pairs), "cohen_kappa"
        result.leaves.append(
            {"leaf_path": leaf_path, "items": len(ids), "reviewers": k, "measure": measure, "value": value}
        )
    pair_units: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for labels in units.values():
        for a, b in combinations(sorted(labels), 2):
            pair_units[(a, b)].append((labels[a], labels[b]))
    for (a, b), pairs in sorted(pair_units.items()):
        result.pairs.append({"reviewers": [a, b], "items": len(pairs), "cohen_kappa": cohen_kappa(pairs)})
    result.overall = krippendorff_alpha(list(units.values()))
    return result


def approved_samples(*, run: int | None = None, path: str = ""):
    """What training reads: the samples reviewers kept (approved, or edited and approved), oldest first, each
    with `kept_question` and `kept_response`, the text in force."""
    items = ReviewItem.objects.filter(state__in=(rules.APPROVED, rules.EDITED)).select_related("sample")
    if run:
        items = items.filter(run_id=run)
    if path:
        from review.queue import under_path

        items = under_path(items, path.strip("/"))
    return items.order_by("sample_id")
