"""What the round trip compares and reuses: qna data equality, which list items an edit kept, moved or changed,
and the lines of a text with their line endings."""

import re
from collections.abc import Mapping

from curation.taxonomy.qna import _json_key

# Past this many (added x removed) list items, edited items are paired by position instead of by likeness.
MAX_PAIRINGS = 10_000
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
BOM = "\ufeff"


def same(a, b) -> bool:
    """Equal as the data of a qna.yaml: 3 is 3.0 (so `version: 3.0` is not an edit), but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def origins(old: list, new: list) -> list[int | None]:
    """For each new item, the old item it was: the same, or (for edited ones) the removed one most like it."""
    by_value: dict = {}
    for index, item in enumerate(old):
        by_value.setdefault(_key(item), []).append(index)
    origin: list[int | None] = []
    for item in new:
        found = by_value.get(_key(item))
        origin.append(found.pop(0) if found else None)
    taken = set(origin)
    left = [i for i in range(len(old)) if i not in taken]
    added = [j for j, i in enumerate(origin) if i is None]
    for j, i in _pair(added, left, old, new):
        origin[j] = i
    return origin


def _pair(added: list[int], left: list[int], old: list, new: list) -> list[tuple[int, int]]:
    """Edited items: each new item not found unchanged, with the removed old item it most resembles."""
    if not added or not left:
        return []
    if len(added) * len(left) > MAX_PAIRINGS:
        return list(zip(added, left, strict=False))
    pairs, free = [], list(left)
    for j in added:
        if not free:
            break
        best = max(free, key=lambda i: (_likeness(old[i], new[j]), -abs(i - j)))
        # An item sharing no field with any removed one is new (one was deleted, another added), not an edit.
        if _likeness(old[best], new[j]) or not isinstance(new[j], dict):
            pairs.append((j, best))
            free.remove(best)
    return pairs


def _likeness(a, b) -> int:
    if isinstance(a, dict) and isinstance(b, dict):
        return sum(1 for key in a if key in b and same(a[key], b[key]))
    return 0


def _key(item):
    try:
        return _json_key(item)
    except TypeError:
        return ("unhashable", id(item))


def line_ending(text: str) -> str:
    crlf, lf = text.count("\r\n"), text.count("\n")
    return "\r\n" if crlf and crlf >= lf - crlf else "\n"


def lines_of(text: str) -> list[str]:
    return _LINE.findall(text)
