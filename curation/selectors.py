"""Reads of the taxonomy: the tree, a leaf as qna data, diff against a baseline, the export."""

import io
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import QuerySet

from curation.models import Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot
from curation.qna_map import leaf_qna
from curation.taxonomy import KINDS


def leaf_snapshot(leaf: Leaf, seeds: Iterable[SeedExample] | None = None, documents: dict | None = None) -> dict:
    """Everything a revision keeps: enough to show the leaf as it was and to say what changed."""
    if documents is None:
        documents = dict(leaf.documents.values_list("name", "sha256"))
    return {"path": leaf.path, "qna": leaf_qna(leaf, seeds), "attribution": leaf.attribution, "documents": documents}


def leaf_list(*, kind: str | None = None, q: str | None = None, valid: bool | None = None) -> QuerySet[Leaf]:
    leaves = Leaf.objects.all()
    if kind:
        leaves = leaves.filter(kind=kind)
    if q:
        leaves = leaves.filter(path__icontains=q)
    if valid is not None:
        leaves = leaves.filter(is_valid=valid)
    return leaves


@dataclass
class Folder:
    """A node of the taxonomy tree: a folder, and the leaf it is when it holds a qna.yaml."""

    name: str
    path: str
    leaf: dict | None = None
    children: dict[str, "Folder"] = field(default_factory=dict)
    leaves: int = 0
    invalid: int = 0

    @property
    def sorted_children(self) -> list["Folder"]:
        return sorted(self.children.values(), key=lambda f: f.name.lower())


def taxonomy_tree() -> Folder:
    """The whole tree with leaf and invalid-leaf counts per folder, from one query."""
    root = Folder(name="", path="")
    for kind in KINDS:
        root.children[kind] = Folder(name=kind, path=kind)
    rows = Leaf.objects.order_by().values_list("id", "path", "kind", "is_valid")
    for leaf_id, path, kind, is_valid in rows.iterator(chunk_size=2000):
        node = root
        chain = [root]
        for part in path.split("/"):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = Folder(name=part, path=f"{node.path}/{part}" if node.path else part)
            node = child
            chain.append(node)
        node.leaf = {"id": leaf_id, "kind": kind, "is_valid": is_valid}
        for folder in chain:
            folder.leaves += 1
            folder.invalid += not is_valid
    return root


def find_folder(root: Folder, path: str) -> Folder | None:
    node = root
    for part in [p for p in path.split("/") if p]:
        node = node.children.get(part)
        if node is None:
            return None
    return node


@dataclass
class TaxonomyDiff:
    baseline: TaxonomySnapshot | None
    added: list[str]
    modified: list[str]
    removed: list[str]
    unchanged: int

    @property
    def changed(self) -> list[str]:
        return sorted(self.added + self.modified)

    def as_dict(self) -> dict:
        return {
            "baseline": None
            if self.baseline is None
            else {
                "id": self.baseline.id,
                "name": self.baseline.name,
                "created_at": self.baseline.created_at.isoformat(),
            },
            "added": self.added,
            "modified": self.modified,
            "removed": self.removed,
            "unchanged": self.unchanged,
        }


def latest_import_snapshot() -> TaxonomySnapshot | None:
    last = TaxonomyImport.objects.filter(snapshot__isnull=False).select_related("snapshot").first()
    return last.snapshot if last else None


def taxonomy_diff(*, baseline: TaxonomySnapshot | None = None) -> TaxonomyDiff:
    """Leaves added, modified or removed since `baseline` (default: the last import), like `ilab taxonomy diff`."""
    if baseline is None:
        baseline = latest_import_snapshot()
    before = baseline.hashes if baseline else {}
    current = dict(Leaf.objects.values_list("path", "content_hash"))
    added = sorted(p for p in current if p not in before)
    modified = sorted(p for p in current if p in before and before[p] != current[p])
    removed = sorted(p for p in before if p not in current)
    unchanged = sum(1 for p in current if p in before and before[p] == current[p])
    return TaxonomyDiff(baseline, added, modified, removed, unchanged)


def leaf_history(leaf: Leaf) -> QuerySet[LeafRevision]:
    return leaf.revisions.select_related("author")


def export_files(*, leaves: QuerySet[Leaf] | None = None) -> tuple[list[tuple[str, bytes]], list[Leaf]]:
    """The files of an InstructLab taxonomy for every valid leaf, and the invalid leaves left out."""
    from curation.taxonomy import export_qna

    if leaves is None:
        leaves = Leaf.objects.all()
    files, skipped = [], []
    for leaf in leaves.order_by("path").prefetch_related("seeds", "documents"):
        if not leaf.is_valid:
            skipped.append(leaf)
            continue
        text = export_qna(leaf_qna(leaf, leaf.seeds.all()), leaf.imported_qna, leaf.qna_path)
        files.append((leaf.qna_path, text.encode("utf-8")))
        if leaf.attribution:
            files.append((f"{leaf.path}/attribution.txt", leaf.attribution.encode("utf-8")))
        for document in leaf.documents.all():
            files.append((f"{leaf.path}/{document.name}", document.content.encode("utf-8")))
    return files, skipped


@dataclass
class TaxonomyExport:
    """The export of the taxonomy: what the Export button, `GET /api/export/` and `taxonomy_export` write."""

    files: list[tuple[str, bytes]]
    skipped: list[Leaf]

    FILENAME = "taxonomy.tar.gz"

    @property
    def leaf_count(self) -> int:
        return sum(1 for path, _ in self.files if path.endswith("/qna.yaml"))

    def write_tar(self, stream) -> None:
        from curation.taxonomy.source import write_tar

        write_tar(self.files, stream)

    def write_directory(self, root) -> None:
        from curation.taxonomy.source import write_directory

        write_directory(self.files, root)

    def tar_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write_tar(buffer)
        return buffer.getvalue()


def taxonomy_export() -> TaxonomyExport:
    """Every valid leaf as InstructLab taxonomy files; invalid leaves are left out and listed."""
    return TaxonomyExport(*export_files())


# --- Reads for the HTML pages (curation/views) ---------------------------------------------------------------


def kind_counts() -> dict[str, dict[str, int]]:
    """Leaves and invalid leaves per kind, from one grouped query: {kind: {"leaves": n, "invalid": m}}."""
    from django.db.models import Count, Q

    counts = {kind: {"leaves": 0, "invalid": 0} for kind in KINDS}
    rows = (
        Leaf.objects.order_by()
        .values("kind")
        .annotate(leaves=Count("id"), invalid=Count("id", filter=Q(is_valid=False)))
    )
    for row in rows:
        counts[row["kind"]] = {"leaves": row["leaves"], "invalid": row["invalid"]}
    return counts


def leaf_documents(leaf: Leaf) -> QuerySet:
    """The leaf's documents without their text, which can be megabytes each."""
    return leaf.documents.defer("content")


def leaf_ids_by_path(paths: Iterable[str]) -> dict[str, int]:
    return dict(Leaf.objects.filter(path__in=list(paths)).values_list("path", "id"))


def snapshot_list() -> QuerySet[TaxonomySnapshot]:
    """Snapshots for a picker: their hash maps (one entry per leaf) are left in the database."""
    return TaxonomySnapshot.objects.defer("hashes").select_related("created_by")


def import_list() -> QuerySet[TaxonomyImport]:
    return TaxonomyImport.objects.defer("problems").select_related("created_by")
