"""A review queue: the filter and sort a reviewer works through, and keyset pages over it.

Parsed from a query string (the page's filter form and the API take the same parameters). Every sort is a
keyset order backed by an index of `ReviewItem` (see its Meta), so neither a page nor a deep cursor counts or
skips rows.
"""

import base64
import json
import math
from dataclasses import asdict, dataclass, fields

from django.db import connection
from django.db.models import Prefetch, Q, QuerySet

from labweb.errors import LabError
from review.core import rules
from review.models import ReviewItem

SORTS = {
    # name: (label, column, descending)
    "age": ("Oldest first", "sample_id", False),
    "-age": ("Newest first", "sample_id", True),
    "score": ("Lowest score first", "score", False),
    "-score": ("Highest score first", "score", True),
    "leaf": ("By leaf", "leaf_path", False),
}
ANY_STATE = "any"
STATE_CHOICES = (*rules.STATES, ANY_STATE)
PAGE_SIZE = 30
MAX_ID = 2**63
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class Queue:
    state: str = rules.PENDING
    run: int | None = None
    path: str = ""
    teacher: str = ""
    kind: str = ""
    duplicate: str = ""  # "yes", "no" or "" (either)
    score_min: float | None = None
    score_max: float | None = None
    q: str = ""
    sort: str = "age"

    @classmethod
    def parse(cls, data) -> "Queue":
        """A queue from query parameters; a bad value is a LabError naming its parameter."""
        for name in (f.name for f in fields(cls)):
            if "\x00" in (data.get(name) or ""):
                raise LabError(f"{name} holds a NUL character.", field=name)
        values: dict = {}
        state = (data.get("state") or rules.PENDING).strip()
        if state not in STATE_CHOICES:
            raise LabError(f"Unknown state {state!r}: one of {', '.join(STATE_CHOICES)}.", field="state")
        values["state"] = state
        sort = (data.get("sort") or "age").strip()
        if sort not in SORTS:
            raise LabError(f"Unknown sort {sort!r}: one of {', '.join(SORTS)}.", field="sort")
        values["sort"] = sort
        for name in ("run",):
            raw = (data.get(name) or "").strip()
            if raw:
                if not raw.isdigit() or not 0 < int(raw) < MAX_ID:
                    raise LabError(f"{name} must be a run id (a whole number), not {raw[:40]!r}.", field=name)
                values[name] = int(raw)
        for name in ("score_min", "score_max"):
            raw = (data.get(name) or "").strip()
            if raw:
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise LabError(f"{name} must be a number, not {raw[:40]!r}.", field=name) from None
                if not math.isfinite(values[name]):
                    raise LabError(f"{name} must be a finite number.", field=name)
        duplicate = (data.get("duplicate") or "").strip()
        if duplicate not in ("", "yes", "no"):
            raise LabError("duplicate must be yes, no or empty.", field="duplicate")
        values["duplicate"] = duplicate
        values["path"] = (data.get("path") or "").strip().strip("/")
        for name in ("teacher", "kind", "q"):
            values[name] = (data.get(name) or "").strip()
        for name in ("path", "teacher", "kind"):
            if len(values[name]) > 1000:
                raise LabError(f"{name} is limited to 1000 characters.", field=name)
        if len(values["q"]) > 200:
            raise LabError("Search text is limited to 200 characters.", field="q")
        return cls(**values)

    def as_params(self) -> dict:
        """The non-default parameters, for links and for a bulk job's record."""
        default = Queue()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }

    @classmethod
    def from_params(cls, params: dict) -> "Queue":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in known})

    def queryset(self, *, reviewer=None) -> QuerySet[ReviewItem]:
        items = ReviewItem.objects.all()
        if self.state != ANY_STATE:
            items = items.filter(state=self.state)
        if self.run:
            items = items.filter(run_id=self.run)
        if self.path:
            items = under_path(items, self.path)
        if self.teacher:
            items = items.filter(teacher_model=self.teacher)
        if self.kind:
            items = items.filter(kind=self.kind)
        if self.duplicate:
            items = items.filter(is_duplicate=self.duplicate == "yes")
        if self.score_min is not None:
            items = items.filter(score__gte=self.score_min)
        if self.score_max is not None:
            items = items.filter(score__lte=self.score_max)
        if self.q:
            items = text_search(items, self.q)
        if reviewer is not None and self.state == rules.PENDING:
            # A sample that needs several reviewers stays pending after this reviewer's vote: not theirs again.
            items = items.exclude(vote_rows__reviewer=reviewer)
        return items

    @property
    def order(self) -> list[str]:
        _, column, descending = SORTS[self.sort]
        columns = [column] if column == "sample_id" else [column, "sample_id"]
        return [f"-{c}" if descending else c for c in columns]

    def describe(self) -> dict:
        return asdict(self)


def for_list(items: QuerySet) -> QuerySet:
    """Rows for a queue page, with their sample's question fetched by id in a second query. A join would let
    PostgreSQL merge-join the whole sample table from its start: a cursor's bound is not carried across it."""
    from generation.models import Sample

    return items.prefetch_related(Prefetch("sample", queryset=Sample.objects.only("id", "question")))


def under_path(items: QuerySet, path: str) -> QuerySet:
    """The leaf `path` and every leaf under the folder `path`.

    The range on leaf_path (a byte-ordered "C" column on PostgreSQL) is what an index can scan; the exact
    condition beside it drops paths that merely share the prefix ("a/b-c" for "a/b").
    """
    return items.filter(leaf_path__gte=path, leaf_path__lt=path + "0").filter(
        Q(leaf_path=path) | Q(leaf_path__startswith=path + "/")
    )


def text_search(items: QuerySet, q: str) -> QuerySet:
    """Full-text search of question and answer on PostgreSQL (GIN index), a plain substring match elsewhere."""
    if connection.vendor == "postgresql":
        return items.extra(
            where=[
                "review_reviewitem.sample_id IN (SELECT id FROM generation_sample WHERE "
                "to_tsvector('english', question || ' ' || response) @@ websearch_to_tsquery('english', %s))"
            ],
            params=[q],
        )
    return items.filter(Q(sample__question__icontains=q) | Q(sample__response__icontains=q))


# --- keyset pages ---------------------------------------------------------------------------------------------


def encode_cursor(values: list, *, backwards: bool = False) -> str:
    raw = json.dumps({"v": values, "b": backwards}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_value(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_ID < value < MAX_ID
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 1000 and "\x00" not in value


def decode_cursor(token: str) -> tuple[list, bool]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        values, backwards = data["v"], bool(data.get("b"))
        if not isinstance(values, list) or not values or not all(_cursor_value(v) for v in values):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise LabError("This cursor is not one the queue issued.", field="cursor") from None
    return values, backwards


def _key(item: ReviewItem | dict, order: list[str]) -> list:
    if isinstance(item, dict):
        return [item[name.lstrip("-")] for name in order]
    return [getattr(item, name.lstrip("-")) for name in order]


def after(items: QuerySet, order: list[str], values: list, *, backwards: bool = False) -> QuerySet:
    """Rows strictly after `values` in `order` (before them when `backwards`), as one row comparison."""
    if len(values) != len(order):
        raise LabError("This cursor belongs to another sort order.", field="cursor")
    descending = order[0].startswith("-")
    op = "<" if descending != backwards else ">"
    table = ReviewItem._meta.db_table
    columns = ", ".join(f'"{table}"."{ReviewItem._meta.get_field(n.lstrip("-")).column}"' for n in order)
    marks = ", ".join(["%s"] * len(values))
    return items.extra(where=[f"({columns}) {op} ({marks})"], params=values)


@dataclass
class Page:
    items: list  # ReviewItems, or dicts for a values() queryset
    next_cursor: str | None
    previous_cursor: str | None


def page(items: QuerySet, order: list[str], *, cursor: str = "", size: int = PAGE_SIZE) -> Page:
    """One keyset page: `size` rows after the cursor (or before it, for a cursor that points backwards)."""
    size = max(1, min(size, MAX_PAGE_SIZE))
    backwards = False
    if cursor:
        values, backwards = decode_cursor(cursor)
        items = after(items, order, values, backwards=backwards)
    flipped = [o[1:] if o.startswith("-") else f"-{o}" for o in order]
    rows = list(items.order_by(*(flipped if backwards else order))[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    next_cursor = previous_cursor = None
    if rows:
        if more or backwards:
            next_cursor = encode_cursor(_key(rows[-1], order))
        if cursor and (more or not backwards):
            previous_cursor = encode_cursor(_key(rows[0], order), backwards=True)
    return Page(rows, next_cursor, previous_cursor)
