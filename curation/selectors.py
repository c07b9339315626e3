"""Reads of the taxonomy: the tree, a leaf as qna data, diff against a baseline, the export."""

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from curation.models import Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot
from curation.qna_map import leaf_qna
from curation.taxonomy import KINDS
from labweb.errors import LabError


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


def snapshot_by_id(value: str) -> TaxonomySnapshot | None:
    """The snapshot a `baseline` parameter names; None when it is empty (diff then uses the last import)."""
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise LabError(f"baseline must be a snapshot id (a whole number), not {value[:40]!r}.", field="baseline")
    baseline = TaxonomySnapshot.objects.select_related("created_by").filter(pk=int(value)).first()
    if baseline is None:
        raise LabError(f"No snapshot {value}: baseline must name an existing snapshot.", field="baseline")
    return baseline


@dataclass(frozen=True)
class DeletedLeaf:
    """A leaf that is gone, as its last revision (the deletion) remembers it: enough to show its history."""

    pk: int
    path: str
    deleted_at: datetime
    deleted_by: object
    deleted = True

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def deleted_leaf(pk: int) -> DeletedLeaf | None:
    """The deleted leaf that had id `pk`; None for a live leaf or an id no leaf ever had."""
    if Leaf.objects.filter(pk=pk).exists():
        return None
    last = LeafRevision.objects.filter(leaf_id=pk).select_related("author").order_by("-number", "-id").first()
    if last is None or last.action != LeafRevision.Action.DELETE:
        return None
    return DeletedLeaf(pk=pk, path=last.path, deleted_at=last.created_at, deleted_by=last.author)


def deleted_leaves() -> QuerySet[LeafRevision]:
    """The deletion of every deleted leaf, newest first (its `leaf_id` names the leaf's history)."""
    return (
        LeafRevision.objects.filter(action=LeafRevision.Action.DELETE, leaf_id__isnull=False)
        .exclude(leaf_id__in=Leaf.objects.values("pk"))
        .select_related("author")
        .defer("snapshot")
    )


def history_ids_by_path(paths: Iterable[str]) -> dict[str, int]:
    """The id of the leaf that last had each of `paths`, deleted or moved away since (links to its history)."""
    rows = (
        LeafRevision.objects.filter(path__in=list(paths), leaf_id__isnull=False)
        .order_by("created_at", "id")
        .values_list("path", "leaf_id")
    )
    return dict(rows)


def leaf_history(leaf: Leaf | DeletedLeaf) -> QuerySet[LeafRevision]:
    return LeafRevision.objects.filter(leaf_id=leaf.pk).select_related("author")


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
