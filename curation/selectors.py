"""Reads of the taxonomy: the tree, a leaf as qna data, diff against a baseline, the export."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from django.db import connection, transaction
from django.db.models import Prefetch, QuerySet

from curation.models import Document, Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot
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


EXPORT_CHUNK = 200  # leaves read at once, with their seeds
DOCUMENT_BATCH_BYTES = 16 * 1024 * 1024  # documents' text read at once: a chunk's documents may be far larger


def export_files(leaves: QuerySet[Leaf]) -> Iterator[tuple[str, bytes]]:
    """The files of an InstructLab taxonomy for every valid leaf of `leaves`, in path order, read from the
    database a chunk of leaves at a time: memory follows a chunk and a batch of documents, not the taxonomy."""
    from curation.taxonomy import export_qna

    documents = Prefetch("documents", queryset=Document.objects.defer("content"))
    valid = leaves.filter(is_valid=True).order_by("path").prefetch_related("seeds", documents)
    rows = valid.iterator(chunk_size=EXPORT_CHUNK)
    while chunk := list(islice(rows, EXPORT_CHUNK)):
        texts = _DocumentTexts([document for leaf in chunk for document in leaf.documents.all()])
        for leaf in chunk:
            text = export_qna(leaf_qna(leaf, leaf.seeds.all()), leaf.imported_qna, leaf.qna_path)
            yield leaf.qna_path, text.encode("utf-8")
            if leaf.attribution:
                yield f"{leaf.path}/attribution.txt", leaf.attribution.encode("utf-8")
            for document in leaf.documents.all():
                yield f"{leaf.path}/{document.name}", texts.take(document).encode("utf-8")


class _DocumentTexts:
    """The text of a chunk's documents, taken in order: read a batch of up to DOCUMENT_BATCH_BYTES at a time (one
    query, not one a document), and let go of as it is taken."""

    def __init__(self, documents: list[Document]):
        self.documents, self.next, self.texts = documents, 0, {}

    def take(self, document: Document) -> str:
        if document.pk not in self.texts:
            batch, size = [], 0
            for later in self.documents[self.next :]:
                if batch and size + later.size > DOCUMENT_BATCH_BYTES:
                    break
                batch.append(later.pk)
                size += later.size
            self.next += len(batch)
            self.texts = dict(Document.objects.filter(pk__in=batch).values_list("pk", "content"))
        return self.texts.pop(document.pk, "")


@contextmanager
def _one_snapshot():
    """Every chunk of an export reads the database as it was when the export began, so an import or edit that
    commits meanwhile is in it whole or not at all. PostgreSQL: one REPEATABLE READ transaction, read only (inside
    a transaction already, that one's snapshot holds). SQLite: the open statement over the leaves keeps one read
    snapshot for the connection until it ends."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


class TaxonomyExport:
    """The export of the taxonomy: what the Export button, `GET /api/export/` and `taxonomy_export` write. The
    files are made as they are written (`write_tar`, `write_directory`), which count them and the invalid leaves
    left out (`skipped`)."""

    FILENAME = "taxonomy.tar.gz"

    def __init__(self, leaves: QuerySet[Leaf] | None = None):
        self.leaves = Leaf.objects.all() if leaves is None else leaves
        self.leaf_count = 0
        self.file_count = 0
        self.skipped = 0

    def _files(self) -> Iterator[tuple[str, bytes]]:
        self.leaf_count = self.file_count = 0
        self.skipped = self.leaves.filter(is_valid=False).count()
        for path, content in export_files(self.leaves):
            self.file_count += 1
            self.leaf_count += path.endswith("/qna.yaml")
            yield path, content

    def write_tar(self, stream) -> None:
        from curation.taxonomy.source import write_tar

        with _one_snapshot():
            write_tar(self._files(), stream)

    def write_directory(self, root) -> None:
        from curation.taxonomy.source import write_directory

        with _one_snapshot():
            write_directory(self._files(), root)

    def skipped_leaves(self) -> Iterator[Leaf]:
        """The invalid leaves an export leaves out, with their problems, in path order."""
        return self.leaves.filter(is_valid=False).order_by("path").only("path", "problems").iterator()


def taxonomy_export() -> TaxonomyExport:
    """Every valid leaf as InstructLab taxonomy files; invalid leaves are left out and counted."""
    return TaxonomyExport()


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
