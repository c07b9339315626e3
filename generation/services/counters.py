"""A run's totals kept as counters, so that a read of a run of 100,000 work items sums a few small rows.

What a counter holds is a sum over the run's items as they stand (`recounted` computes the same from the items):
per leaf (`LeafCounter`) the items by state, their targets and the `kept` of those not running; per run
(`RunCounter`) the same totals, and the teacher's counters (`stats`, with its `error_kinds`) of every item not
running and the stage counters (`counts`) of every item neither running nor pending. A running item's own
counters change at every heartbeat: the reads add those of the few running items live.

Every change of items that moves one of those sums goes through `items_change`: it locks the items, updates
them, and adds the difference to the counters in the same transaction (`INSERT ... ON CONFLICT DO UPDATE SET
value = value + excluded.value`: no read-modify-write, no lost update). A run's counters are spread over a few
rows per name (`SHARDS`, chosen by item), so that workers finishing items at once do not wait on one row; the
rows are always taken in one order (the leaf's, then the run's by name), so two changes never deadlock.

`counters_recount` compares the counters with a recount from the items and repairs them (`manage.py
generation_recount`): after a change that bypassed `items_change` (SQL by hand), or a bug.
"""

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Count, Min, Q, QuerySet, Sum

from generation.models import LeafCounter, RunCounter, WorkItem
from generation.services.bulk import bulk_insert

SHARDS = 8
STATES = tuple(WorkItem.State.values)
RUNNING = WorkItem.State.RUNNING
PENDING = WorkItem.State.PENDING
LEAF_COLUMNS = ("items", "target", *STATES, "kept")
# What an item contributes to the counters; `items_change` reads these before and after it changes items.
FIELDS = ("pk", "run_id", "leaf_path", "kind", "state", "target", "kept", "stats", "counts")
TALLIED = frozenset(FIELDS) - {"pk", "run_id"}
IN_BATCH = 10_000  # pks in one `IN (...)`: PostgreSQL takes at most 65,535 parameters a statement


def json_numbers(data) -> Iterator[tuple[str, float]]:
    """The numeric values of a JSON object (as the database's sums see them: booleans are not numbers)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield key, value


@dataclass
class Tally:
    """Counter differences: per leaf path its columns, per run name its value."""

    leaves: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    kinds: dict[str, str] = field(default_factory=dict)
    run: Counter = field(default_factory=Counter)

    def add(self, item: dict, sign: int = 1) -> None:
        """Add (or, with sign -1, take away) what one item, as a dict of `FIELDS`, contributes."""
        state, path = item["state"], item["leaf_path"]
        self.kinds.setdefault(path, item["kind"])
        leaf, run = self.leaves[path], self.run
        for counter in (leaf, run):
            counter["items"] += sign
            counter["target"] += sign * item["target"]
        leaf[state] += sign
        run[f"state:{state}"] += sign
        if state == RUNNING:
            return  # its counters are read live
        leaf["kept"] += sign * item["kept"]
        run["kept"] += sign * item["kept"]
        stats = item["stats"] or {}
        for key, value in json_numbers(stats):
            run[f"stats:{key}"] += sign * value
        for key, value in json_numbers(stats.get("error_kinds")):
            run[f"error_kinds:{key}"] += sign * value
        if state != PENDING:
            for key, value in json_numbers(item["counts"]):
                run[f"counts:{key}"] += sign * value


def _batches(rows: list, size: int) -> Iterator[list]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _upsert(table: str, columns: list[str], conflict: list[str], added: list[str], rows: list[tuple]) -> None:
    """INSERT the rows; on a conflict add their `added` columns to the row there (the same SQL for PostgreSQL
    and SQLite)."""
    if not rows:
        return
    quote = connection.ops.quote_name
    names = ", ".join(map(quote, columns))
    sets = ", ".join(f"{quote(name)} = {quote(table)}.{quote(name)} + excluded.{quote(name)}" for name in added)
    per_statement = max(1, (connection.features.max_query_params or 30_000) // len(columns))
    with connection.cursor() as cursor:
        for batch in _batches(rows, min(per_statement, 1000)):
            values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(batch))
            cursor.execute(
                f"INSERT INTO {quote(table)} ({names}) VALUES {values} "
                f"ON CONFLICT ({', '.join(map(quote, conflict))}) DO UPDATE SET {sets}",
                [value for row in batch for value in row],
            )


def counters_add(run_id: int, tally: Tally, *, shard: int = 0) -> None:
    """Add a tally to the run's counters. Call it inside the transaction that made the change."""
    leaves = [
        (run_id, path, tally.kinds[path], *(int(columns[name]) for name in LEAF_COLUMNS))
        for path, columns in sorted(tally.leaves.items())
        if any(columns.values())
    ]
    _upsert(
        LeafCounter._meta.db_table,
        ["run_id", "leaf_path", "kind", *LEAF_COLUMNS],
        ["run_id", "leaf_path"],
        list(LEAF_COLUMNS),
        leaves,
    )
    names = [(run_id, shard % SHARDS, name, float(value)) for name, value in sorted(tally.run.items()) if value]
    _upsert(
        RunCounter._meta.db_table, ["run_id", "shard", "name", "value"], ["run_id", "name", "shard"], ["value"], names
    )


def counters_planned(run_id: int, items: list[dict]) -> None:
    """The counters of a new run's items (their fields as dicts; all pending, nothing kept): `run_create` calls it as
    it inserts them."""
    tally = Tally()
    for item in items:
        tally.add({"state": PENDING, "kept": 0, "stats": {}, "counts": {}} | item)
    bulk_insert(
        LeafCounter,
        [
            {"run_id": run_id, "leaf_path": path, "kind": tally.kinds[path], **columns}
            for path, columns in sorted(tally.leaves.items())
        ],
    )
    counters_add(run_id, Tally(run=tally.run))


def items_change(items: QuerySet[WorkItem], **changes) -> int:
    """Update the items (a queryset of any filter) and their runs' counters in one transaction; return how many
    changed. The items are locked first (in pk order), so what they were is what the update changes."""
    with transaction.atomic():
        before = list(items.select_for_update(of=("self",)).order_by("pk").values(*FIELDS))
        if not before:
            return 0
        pks = [row["pk"] for row in before]
        for batch in _batches(pks, IN_BATCH):
            WorkItem.objects.filter(pk__in=batch).update(**changes)
        if any(hasattr(value, "resolve_expression") for name, value in changes.items() if name in TALLIED):
            after = [row for batch in _batches(pks, IN_BATCH) for row in _rows(batch)]
        else:
            set_here = {name: value for name, value in changes.items() if name in TALLIED}
            after = [row | set_here for row in before]
        by_run: dict[int, Tally] = defaultdict(Tally)
        for old, new in zip(before, after, strict=True):
            by_run[old["run_id"]].add(old, -1)
            by_run[new["run_id"]].add(new)
        for run_id, tally in sorted(by_run.items()):
            counters_add(run_id, tally, shard=pks[0])
    return len(before)


def _rows(pks: list[int]) -> list[dict]:
    return list(WorkItem.objects.filter(pk__in=pks).order_by("pk").values(*FIELDS))


# --- recount ------------------------------------------------------------------------------------------------


def json_sums(items: QuerySet[WorkItem], column: str, inner: str = "") -> Counter:
    """Every numeric value of the items' JSON `column` (or of its object `inner`) summed by key, in the database."""
    query, params = items.order_by().values("pk").query.sql_with_params()
    if connection.vendor == "postgresql":
        value = f"w.{column} -> '{inner}'" if inner else f"w.{column}"
        sql = (
            f"SELECT e.key, SUM((e.value #>> '{{}}')::numeric) FROM generation_workitem w "
            f"CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof({value}) = 'object' THEN {value} "
            f"ELSE '{{}}'::jsonb END) e WHERE w.id IN ({query}) AND jsonb_typeof(e.value) = 'number' GROUP BY e.key"
        )
    else:
        path = f", '$.{inner}'" if inner else ""
        sql = (
            f"SELECT e.key, SUM(e.value) FROM generation_workitem w, json_each(w.{column}{path}) e "
            f"WHERE w.id IN ({query}) AND e.type IN ('integer', 'real') GROUP BY e.key"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return Counter({key: float(total) for key, total in cursor.fetchall()})


@dataclass
class Counts:
    """A run's counters: per leaf path its columns (and kind), per run name its value."""

    leaves: dict[str, dict] = field(default_factory=dict)
    run: dict[str, float] = field(default_factory=dict)

    def differences(self, other: "Counts") -> list[str]:
        """What differs from `other`, one line each ("leaf a/b: done 3, not 4")."""
        lines = []
        for path in sorted(set(self.leaves) | set(other.leaves)):
            mine, theirs = self.leaves.get(path, {}), other.leaves.get(path, {})
            for name in LEAF_COLUMNS:
                if mine.get(name, 0) != theirs.get(name, 0):
                    lines.append(f"leaf {path}: {name} {mine.get(name, 0)}, not {theirs.get(name, 0)}")
        for name in sorted(set(self.run) | set(other.run)):
            mine, theirs = self.run.get(name, 0), other.run.get(name, 0)
            if abs(mine - theirs) > 1e-6 * max(1.0, abs(mine), abs(theirs)):
                lines.append(f"run {name}: {mine:g}, not {theirs:g}")
        return lines


def recounted(run_id: int) -> Counts:
    """The run's counters as its items say they are (a scan of the run's items: seconds at 100,000)."""
    items = WorkItem.objects.filter(run_id=run_id).order_by()
    counts = Counts()
    rows = items.values("leaf_path").annotate(
        kind=Min("kind"),
        items=Count("pk"),
        target=Sum("target"),
        kept=Sum("kept", filter=~Q(state=RUNNING), default=0),
        **{state: Count("pk", filter=Q(state=state)) for state in STATES},
    )
    for row in rows:
        counts.leaves[row.pop("leaf_path")] = row
        for name in LEAF_COLUMNS:
            key = f"state:{name}" if name in STATES else name
            counts.run[key] = counts.run.get(key, 0) + row[name]
    settled = items.exclude(state=RUNNING)
    sums = [
        ("stats", json_sums(settled, "stats")),
        ("error_kinds", json_sums(settled, "stats", "error_kinds")),
        ("counts", json_sums(settled.exclude(state=PENDING), "counts")),
    ]
    for prefix, values in sums:
        counts.run.update({f"{prefix}:{key}": value for key, value in values.items()})
    counts.run = {name: value for name, value in counts.run.items() if value}
    return counts


def stored(run_id: int) -> Counts:
    """The run's counters as they stand."""
    counts = Counts()
    for row in LeafCounter.objects.filter(run_id=run_id).values("leaf_path", "kind", *LEAF_COLUMNS):
        counts.leaves[row.pop("leaf_path")] = row
    rows = RunCounter.objects.filter(run_id=run_id).values("name").annotate(total=Sum("value")).order_by()
    counts.run = {row["name"]: row["total"] for row in rows if row["total"]}
    return counts


def counters_recount(run_id: int, *, repair: bool = True) -> list[str]:
    """Recount the run's counters from its items; return what differed (nothing when they were right), and with
    `repair` write the recount in their place. Changes under way wait: the run's leaf counters are locked first,
    and every change of items takes one of them before it commits."""
    with transaction.atomic():
        list(LeafCounter.objects.select_for_update().filter(run_id=run_id).order_by("leaf_path").values_list("pk"))
        wanted, have = recounted(run_id), stored(run_id)
        differences = have.differences(wanted)
        if differences and repair:
            LeafCounter.objects.filter(run_id=run_id).delete()
            RunCounter.objects.filter(run_id=run_id).delete()
            LeafCounter.objects.bulk_create(
                [LeafCounter(run_id=run_id, leaf_path=path, **row) for path, row in sorted(wanted.leaves.items())],
                batch_size=2000,
            )
            RunCounter.objects.bulk_create(
                [RunCounter(run_id=run_id, name=name, value=value) for name, value in sorted(wanted.run.items())]
            )
    return differences
