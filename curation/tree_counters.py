"""Per-leaf counters that apps above curation draw on the taxonomy tree, without curation importing them.

The interface, for an app (review, evaluation) that wants its numbers on the tree:

    from curation.tree_counters import LeafCounters, register

    def review_counts(leaf_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        rows = Sample.objects.filter(leaf_id__in=leaf_ids).values("leaf_id", "state").annotate(n=Count("id"))
        ...  # {leaf_id: {"pending": 3, "approved": 5, "rejected": 1}}

    class ReviewConfig(AppConfig):
        def ready(self):
            register(LeafCounters(key="review", label="Review", fields=("pending", "approved", "rejected"),
                                  counts=review_counts))

- `key`: a unique slug (letters, digits, `_`, `-`); it names the counter in the API (`counters[key]`) and in
  CSS (`counter-<key>`). Registering another counter under a taken key is an error; registering the same
  object again (a second `ready()`) is not.
- `fields`: the slugs counted, in the order they are drawn; each part of the bar has the CSS class
  `counter-<key>-<field>`, so an app's stylesheet can colour it.
- `counts(leaf_ids)`: called once per request with every leaf id the response draws (for a folder: every leaf
  under it, which at the tree's top is the whole taxonomy), it must return the counts per leaf in a fixed
  number of queries whatever the number of ids (one grouped query, never one a leaf). Leaves or fields it
  leaves out count 0; negative or non-integer values are an error. It runs inside the request: keep it a read.

Curation sums a folder's values over its subtree and shows, beside each leaf and folder, one small stacked bar
per counter with the numbers in its title; the API's `tree` gives the same numbers as
`{"counters": {key: {field: n}}}` on every node.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

CountsFn = Callable[[Sequence[int]], dict[int, dict[str, int]]]


@dataclass(frozen=True)
class LeafCounters:
    key: str
    label: str
    fields: tuple[str, ...]
    counts: CountsFn


@dataclass(frozen=True)
class Bar:
    """One counter drawn for one node: its values in field order and each one's share of the total."""

    key: str
    label: str
    parts: tuple[tuple[str, int, float], ...]  # (field, value, percent of the total)
    total: int

    @property
    def title(self) -> str:
        return f"{self.label}: " + ", ".join(f"{field} {value}" for field, value, _ in self.parts)


_registry: dict[str, LeafCounters] = {}


def register(counters: LeafCounters) -> LeafCounters:
    """Add a counter to the tree; call it from the registering app's `AppConfig.ready()`."""
    if not _SLUG.match(counters.key):
        raise ValueError(f"Counter key {counters.key!r} is not a slug (a-z, 0-9, _ and -).")
    fields = tuple(counters.fields)
    if not fields or len(set(fields)) != len(fields) or not all(_SLUG.match(f) for f in fields):
        raise ValueError(f"Counter {counters.key!r} needs distinct slug fields, not {counters.fields!r}.")
    if not callable(counters.counts):
        raise ValueError(f"Counter {counters.key!r} needs a callable counts(leaf_ids).")
    taken = _registry.get(counters.key)
    if taken is not None and taken != counters:
        raise ValueError(f"A counter is already registered under {counters.key!r}.")
    _registry[counters.key] = counters
    return counters


def unregister(key: str) -> None:
    _registry.pop(key, None)


def registered() -> list[LeafCounters]:
    return list(_registry.values())


def leaf_counts(leaf_ids: Sequence[int]) -> dict[str, dict[int, dict[str, int]]]:
    """{counter key: {leaf id: {field: n}}} from every registered provider, one call each; absent counts are 0."""
    out: dict[str, dict[int, dict[str, int]]] = {}
    for counters in registered():
        found = counters.counts(leaf_ids) if leaf_ids else {}
        fields = counters.fields
        per_leaf = {leaf_id: {f: values.get(f, 0) for f in fields} for leaf_id, values in found.items()}
        for leaf_id, row in per_leaf.items():
            if not all(type(value) is int and value >= 0 for value in row.values()):
                bad = next(f"{f}={v!r}" for f, v in row.items() if type(v) is not int or v < 0)
                raise ValueError(f"Counter {counters.key!r} gave leaf {leaf_id} {bad}.")
        out[counters.key] = per_leaf
    return out


def empty_sums() -> dict[str, dict[str, int]]:
    return {c.key: dict.fromkeys(c.fields, 0) for c in registered()}


def add_into(sums: dict[str, dict[str, int]], counts: dict[str, dict[int, dict[str, int]]], leaf_id: int) -> None:
    for key, per_leaf in counts.items():
        values = per_leaf.get(leaf_id)
        if values:
            target = sums[key]
            for field, value in values.items():
                target[field] += value


def bars(sums: dict[str, dict[str, int]], counters: Iterable[LeafCounters] | None = None) -> list[Bar]:
    drawn = []
    for c in registered() if counters is None else counters:
        values = sums.get(c.key) or {}
        total = sum(values.get(f, 0) for f in c.fields)
        parts = tuple((f, values.get(f, 0), 100 * values.get(f, 0) / total if total else 0.0) for f in c.fields)
        drawn.append(Bar(c.key, c.label, parts, total))
    return drawn
