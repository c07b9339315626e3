"""An import's writes, a batch of leaves at a time inside the import's one transaction."""

from django.db.models import Prefetch

from curation.models import Document, Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot
from curation.qna_map import LEAF_CONTENT_FIELDS, apply_qna
from curation.selectors import leaf_snapshot
from curation.services.content import leaf_warnings
from curation.services.imports.plan import ImportPlan, Known
from curation.services.imports.progress import Progress
from curation.services.leaves import deletion_revision
from curation.taxonomy.changes import describe_changes
from curation.taxonomy.source import LeafSource

# Changed leaves are written in batches of about this many bytes of qna.yaml text (or BATCH_LEAVES leaves); a file
# bigger than that goes alone. Parsing a file holds ~13x its size at its peak (the YAML node tree, for the lines of
# problems), so an import's memory follows its largest file, not the source (bench/bench_import_limits.py).
BATCH_BYTES = 1024 * 1024
BATCH_LEAVES = 500
# Documents go in batches of about this many bytes, each text read from the source's spool only then: a 2 MiB
# document goes alone (the driver holds a few copies of what it sends).
DOCUMENT_BATCH_BYTES = 2 * 1024 * 1024


def _document_names():
    # What a leaf's documents are matters here (name and hash), not their text: leave that in the database.
    return Prefetch("documents", queryset=Document.objects.only("id", "leaf_id", "name", "sha256"))


class Batch:
    """Changed leaves waiting to be written, a few MiB of them at a time."""

    def __init__(self, user, progress: Progress):
        self.user = user
        self.progress = progress
        self.changes: list[tuple[LeafSource, str, dict[str, str], Known | None]] = []
        self.retexts: list[Leaf] = []
        self.held = 0

    def change(self, src: LeafSource, digest: str, doc_hashes: dict[str, str], old: Known | None) -> None:
        self._make_room(len(src.qna.text))
        self.changes.append((src, digest, doc_hashes, old))

    def retext(self, pk: int, text: str) -> None:
        self._make_room(len(text))
        self.retexts.append(Leaf(pk=pk, imported_qna=text))

    def _make_room(self, size: int) -> None:
        # A leaf that would take the batch past its size goes into the next one: a big file is written alone.
        if self.held + size > BATCH_BYTES or len(self.changes) + len(self.retexts) >= BATCH_LEAVES:
            self.flush()
        self.held += size

    def flush(self) -> None:
        if self.retexts:
            Leaf.objects.bulk_update(self.retexts, ["imported_qna"])
        if self.changes:
            _write(self.changes, user=self.user)
            self.progress.written(len(self.changes))
        self.changes, self.retexts, self.held = [], [], 0


def _write(changes, *, user) -> None:
    current = Leaf.objects.filter(pk__in=[old.pk for *_, old in changes if old is not None])
    current = {leaf.pk: leaf for leaf in current.prefetch_related("seeds", _document_names())}
    created, updated, seeds, documents, revisions = [], [], [], [], []
    for src, digest, doc_hashes, old in changes:
        before = None
        if old is None:
            leaf = Leaf(path=src.folder, revision=1)
            created.append(leaf)
        else:
            leaf = current[old.pk]
            before = leaf_snapshot(leaf, leaf.seeds.all(), {d.name: d.sha256 for d in leaf.documents.all()})
            leaf.revision += 1
            updated.append(leaf)
        seeds.append(apply_qna(leaf, src.qna.data))
        leaf.imported_qna = src.qna.text
        leaf.attribution = src.attribution
        leaf.problems = [p.as_dict() for p in src.qna.problems + leaf_warnings(leaf, doc_hashes)]
        leaf.is_valid = True
        leaf.content_hash = digest
        leaf.updated_by = user
        documents.append((leaf, src, doc_hashes))
        after = {"path": leaf.path, "qna": src.qna.data, "attribution": src.attribution, "documents": doc_hashes}
        revisions.append(
            LeafRevision(
                leaf=leaf,
                path=leaf.path,
                number=leaf.revision,
                action=LeafRevision.Action.IMPORT,
                author=user,
                changes=describe_changes(before, after) if before else ["imported"],
                snapshot=after,
                content_hash=digest,
            )
        )

    Leaf.objects.bulk_create(created)
    if updated:
        Leaf.objects.bulk_update(
            updated,
            [*LEAF_CONTENT_FIELDS, "imported_qna", "problems", "is_valid", "content_hash", "revision", "updated_by"],
        )
        SeedExample.objects.filter(leaf__in=updated).delete()
        Document.objects.filter(leaf__in=updated).delete()
    # The leaves now have primary keys: re-point their children at them before inserting.
    for leaf_seeds in seeds:
        for seed in leaf_seeds:
            seed.leaf_id = seed.leaf.pk
    SeedExample.objects.bulk_create([seed for leaf_seeds in seeds for seed in leaf_seeds], batch_size=2000)
    _create_documents(documents, user)
    for revision in revisions:
        revision.leaf_id = revision.leaf.pk
    LeafRevision.objects.bulk_create(revisions, batch_size=1000)


def finish(plan: ImportPlan, *, user) -> TaxonomyImport:
    """Prune what the plan removes, move the diff baseline if anything changed, and record the import."""
    for start in range(0, len(plan.removed), BATCH_LEAVES):
        paths = plan.removed[start : start + BATCH_LEAVES]
        gone = list(Leaf.objects.filter(path__in=paths).prefetch_related("seeds", _document_names()))
        LeafRevision.objects.bulk_create(
            [
                deletion_revision(
                    leaf,
                    user=user,
                    reason="deleted: not in the imported taxonomy",
                    snapshot=leaf_snapshot(leaf, leaf.seeds.all(), {d.name: d.sha256 for d in leaf.documents.all()}),
                )
                for leaf in gone
            ]
        )
        Leaf.objects.filter(pk__in=[leaf.pk for leaf in gone]).delete()

    # The baseline of "changed since the last import" moves only when the import changed the taxonomy: one that
    # changed nothing (every file rejected, or all unchanged) must not hide the edits made since the last one.
    snapshot = None
    if not plan.changes_nothing:
        snapshot = TaxonomySnapshot.objects.create(
            name=f"Import of {plan.source}"[:200],
            created_by=user,
            hashes=dict(Leaf.objects.values_list("path", "content_hash")),
        )
    failed = plan.imports_nothing
    return TaxonomyImport.objects.create(
        source=plan.source[:1000],
        created_by=user,
        status=TaxonomyImport.Status.FAILED if failed else TaxonomyImport.Status.SUCCEEDED,
        message=f"Every file was rejected ({plan.rejected}); nothing was imported." if failed else "",
        files_seen=plan.files_seen,
        created=len(plan.created),
        updated=len(plan.updated),
        unchanged=plan.unchanged,
        removed=len(plan.removed),
        rejected=plan.rejected,
        problems=plan.problems,
        snapshot=snapshot,
    )


def refusal(*, source: str, user, message: str, problems: list[dict], duration_ms: int = 0) -> TaxonomyImport:
    """Record an import refused before it changed anything (an unsafe source, a prune of every leaf)."""
    return TaxonomyImport.objects.create(
        source=source[:1000],
        created_by=user,
        status=TaxonomyImport.Status.REFUSED,
        message=message,
        problems=[{**problem, "level": "error"} for problem in problems],
        duration_ms=duration_ms,
    )


def _create_documents(documents, user) -> None:
    """Insert the documents of the leaves brought in, reading each text only when its batch is built."""
    batch, held = [], 0
    for leaf, src, hashes in documents:
        for name in src.documents:
            size = src.documents.size(name)
            if batch and held + size > DOCUMENT_BATCH_BYTES:
                Document.objects.bulk_create(batch)
                batch, held = [], 0
            text = src.documents[name]
            batch.append(
                Document(leaf_id=leaf.pk, name=name, content=text, sha256=hashes[name], size=size, created_by=user)
            )
            held += size
    Document.objects.bulk_create(batch)
