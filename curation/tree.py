"""Reads of the taxonomy tree: the part of it a page draws, counted in the database, or all of it for the API.

Folders are implied by leaf paths. A page draws the roots and the folders on one open path; each opened
folder's direct children come from one grouped query (all of them in one UNION), so the cost follows what is
drawn, not the size of the taxonomy. Per-leaf counters registered by other apps (`curation.tree_counters`) are
summed per drawn folder over its subtree.
"""

import itertools
from dataclasses import dataclass, field

from django.contrib.postgres.aggregates import ArrayAgg
from django.db import connection
from django.db.models import Case, Count, F, Max, Q, QuerySet, Value, When
from django.db.models.functions import Concat, StrIndex, Substr

from curation import tree_counters
from curation.models import Leaf
from curation.taxonomy import KINDS

MAX_OPEN_DEPTH = 64  # folders opened by one ?open= (each adds a branch to the tree's one query)


@dataclass
class Folder:
    """A node of the taxonomy tree: a folder, and the leaf it is when it holds a qna.yaml.

    `children` is None where the folder's contents were not loaded (they load on demand); `counts` holds the
    registered counters summed over the folder's subtree (`curation.tree_counters`).
    """

    name: str
    path: str
    leaf: dict | None = None
    leaves: int = 0
    invalid: int = 0
    has_children: bool = False
    children: list["Folder"] | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def bars(self) -> list[tree_counters.Bar]:
        return tree_counters.bars(self.counts) if self.counts else []


def _sort(folders) -> list[Folder]:
    return sorted(folders, key=lambda f: f.name.lower())


def taxonomy_tree() -> Folder:
    """The whole tree with leaf, invalid-leaf and counter sums per folder, from one query (plus the counters')."""
    root = Folder(name="", path="")
    nodes: dict[str, dict] = {"": {}}
    folders: dict[str, Folder] = {"": root}
    for kind in KINDS:
        folders[kind] = nodes[""][kind] = Folder(name=kind, path=kind)
        nodes[kind] = {}
    rows = list(Leaf.objects.order_by().values_list("id", "path", "kind", "is_valid").iterator(chunk_size=2000))
    counts = tree_counters.leaf_counts([row[0] for row in rows]) if tree_counters.registered() else {}
    for folder in folders.values():
        folder.counts = tree_counters.empty_sums()
    for leaf_id, path, kind, is_valid in rows:
        chain = [root]
        parent = ""
        for part in path.split("/"):
            here = f"{parent}/{part}" if parent else part
            node = folders.get(here)
            if node is None:
                node = Folder(name=part, path=here, counts=tree_counters.empty_sums())
                folders[here] = nodes[parent][part] = node
                nodes[here] = {}
            chain.append(node)
            parent = here
        chain[-1].leaf = {"id": leaf_id, "kind": kind, "is_valid": is_valid}
        for folder in chain:
            folder.leaves += 1
            folder.invalid += not is_valid
            if counts:
                tree_counters.add_into(folder.counts, counts, leaf_id)
    for path, folder in folders.items():
        folder.children = _sort(nodes[path].values())
        folder.has_children = bool(folder.children)
    return root


def _child_rows(prefix: str) -> QuerySet:
    """One row per direct child of the folder `prefix`: its name, leaf counts and own leaf."""
    rest = Substr("path", len(prefix) + 2)
    leaves = Leaf.objects.order_by().filter(path__startswith=prefix + "/").annotate(rest=rest)
    leaves = leaves.annotate(slash=StrIndex("rest", Value("/"))).annotate(
        child=Case(When(slash=0, then=F("rest")), default=Substr("rest", 1, F("slash") - 1))
    )
    return leaves.values("child").annotate(
        leaves=Count("id"),
        invalid=Count("id", filter=Q(is_valid=False)),
        leaf_id=Max("id", filter=Q(slash=0)),
        leaf_kind=Max("kind", filter=Q(slash=0)),
        leaf_invalid=Count("id", filter=Q(slash=0, is_valid=False)),
    )


def _roots() -> list[Folder]:
    """The three roots, counted by kind: a leaf's kind is its root folder, so no path is taken apart."""
    counts = {kind: (0, 0) for kind in KINDS}
    rows = Leaf.objects.order_by().values("kind").annotate(n=Count("id"), bad=Count("id", filter=Q(is_valid=False)))
    for row in rows:
        counts[row["kind"]] = (row["n"], row["bad"])
    return _sort(Folder(name=k, path=k, leaves=n, invalid=bad, has_children=n > 0) for k, (n, bad) in counts.items())


def _children(*prefixes: str) -> dict[str, list[Folder]]:
    """The direct children of each folder in `prefixes` (not the top), from one query whatever their number."""
    if not prefixes:
        return {}
    queries = [_child_rows(prefix).annotate(parent=Value(prefix)) for prefix in prefixes]
    rows = queries[0].union(*queries[1:], all=True) if len(queries) > 1 else queries[0]
    found: dict[str, dict[str, Folder]] = {prefix: {} for prefix in prefixes}
    for row in rows:
        prefix, name = row["parent"], row["child"]
        leaf = None
        if row["leaf_id"] is not None:
            leaf = {"id": row["leaf_id"], "kind": row["leaf_kind"], "is_valid": not row["leaf_invalid"]}
        found[prefix][name] = Folder(
            name=name,
            path=f"{prefix}/{name}",
            leaf=leaf,
            leaves=row["leaves"],
            invalid=row["invalid"],
            has_children=row["leaves"] > (leaf is not None),
        )
    return {prefix: _sort(children.values()) for prefix, children in found.items()}


def _next_segment(prefix: str):
    """SQL for the name of the folder directly under `prefix` that holds a leaf's path."""
    rest = Substr("path", len(prefix) + 2) if prefix else F("path")
    return Substr(rest, 1, StrIndex(Concat(rest, Value("/")), Value("/")) - 1)


def _add_counts(top: Folder) -> None:
    """Sum the registered counters into `top` and every folder drawn under it.

    One query gives each leaf below `top` with the drawn folder it falls in (the children of the deepest open
    folder above it), one call of each provider counts them all, and the sums fold up the open path.
    """
    path = [top]
    while (opened := next((c for c in path[-1].children or () if c.children is not None), None)) is not None:
        path.append(opened)
    deeper = list(enumerate(path))[:0:-1]
    level = Case(*[When(path__startswith=f.path + "/", then=Value(i)) for i, f in deeper], default=Value(0))
    child = Case(
        *[When(path__startswith=f.path + "/", then=_next_segment(f.path)) for i, f in deeper],
        default=_next_segment(top.path) if top.path else F("kind"),  # a leaf's kind is its root folder
    )
    leaves = Leaf.objects.order_by()
    if top.path:
        leaves = leaves.filter(path__startswith=top.path + "/")
    groups = _ids_by_bucket(leaves.annotate(level=level, child=child))
    counts = tree_counters.leaf_counts(list(itertools.chain.from_iterable(ids for _, _, ids in groups)))
    buckets: dict[tuple[int, str], dict[str, dict[str, int]]] = {}
    for key, per_leaf in counts.items():
        for depth, name, ids in groups:
            # Set intersection runs in C: only the leaves a provider counted are visited in Python.
            counted = per_leaf.keys() & set(ids)
            if counted:
                sums = buckets.setdefault((depth, name), tree_counters.empty_sums())[key]
                for leaf_id in counted:
                    for field_name, value in per_leaf[leaf_id].items():
                        sums[field_name] += value
    below = tree_counters.empty_sums()  # everything under the open folder one level down
    for depth in range(len(path) - 1, -1, -1):
        level_total = tree_counters.empty_sums()
        for folder in path[depth].children or ():
            folder.counts = tree_counters.empty_sums()
            _merge(folder.counts, buckets.get((depth, folder.name)))
            if depth + 1 < len(path) and folder is path[depth + 1]:
                _merge(folder.counts, below)
            _merge(level_total, folder.counts)
        below = level_total
    top.counts = below


def _ids_by_bucket(leaves: QuerySet) -> list[tuple[int, str, list[int]]]:
    """(level, child, leaf ids) per drawn folder: on PostgreSQL a few rows of id arrays rather than a row a leaf,
    which is most of the cost at 50,000 leaves."""
    if connection.vendor == "postgresql":
        rows = leaves.values("level", "child").annotate(ids=ArrayAgg("id"))
        return [(row["level"], row["child"], row["ids"]) for row in rows]
    grouped: dict[tuple[int, str], list[int]] = {}
    for leaf_id, depth, name in leaves.values_list("id", "level", "child"):
        grouped.setdefault((depth, name), []).append(leaf_id)
    return [(depth, name, ids) for (depth, name), ids in grouped.items()]


def _merge(into: dict[str, dict[str, int]], add: dict[str, dict[str, int]] | None) -> None:
    for key, values in (add or {}).items():
        target = into[key]
        for field_name, value in values.items():
            target[field_name] += value


def tree_open(path: str = "") -> Folder:
    """The tree's top with the folders on `path` opened: their direct children only, counted in the database
    (the roots by kind, the opened folders in one more query), whatever the size of the taxonomy."""
    parts = [p for p in path.split("/") if p][:MAX_OPEN_DEPTH]
    root = Folder(name="", path="", children=_roots(), has_children=True)
    root.leaves = sum(child.leaves for child in root.children)
    root.invalid = sum(child.invalid for child in root.children)
    opened = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)] if parts and parts[0] in KINDS else []
    children = _children(*opened)
    node = root
    for prefix in opened:
        node = next((child for child in node.children if child.path == prefix), None)
        if node is None or not node.has_children:
            break
        node.children = children[prefix]
    if tree_counters.registered():
        _add_counts(root)
    return root


def folder_contents(path: str) -> Folder | None:
    """A folder with its direct children loaded (the tree's children partial); None where no leaf is under it."""
    path = path.strip("/")
    if not path:
        return None
    children = _children(path)[path]
    if not children:
        return None
    folder = Folder(name=path.rsplit("/", 1)[-1], path=path, children=children, has_children=True)
    if tree_counters.registered():
        _add_counts(folder)
    return folder
