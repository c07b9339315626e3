"""Import an InstructLab taxonomy: every valid leaf in, every invalid file reported, nothing partial."""

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Prefetch

from curation.models import Document, Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot
from curation.selectors import leaf_snapshot
from curation.services.content import apply_qna, leaf_warnings, sha256_text
from curation.taxonomy import content_hash
from curation.taxonomy.changes import describe_changes
from curation.taxonomy.source import Limits, TaxonomyRead
from labweb.errors import LabError


def import_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.LABWEB_IMPORT_MAX_FILE_BYTES,
        max_total_bytes=settings.LABWEB_IMPORT_MAX_TOTAL_BYTES,
        max_files=settings.LABWEB_IMPORT_MAX_FILES,
    )


def taxonomy_import(*, read: Callable[[], TaxonomyRead], source: str, user, prune: bool = False) -> TaxonomyImport:
    """Read a taxonomy with `read` and bring its valid leaves in, in one transaction.

    A leaf whose file is invalid keeps its current content. A source refused as unsafe changes nothing; the
    refusal is still recorded. With `prune`, leaves that the source does not hold at all are deleted.
    """
    started = time.monotonic()
    try:
        taxonomy = read()
    except LabError as error:
        return TaxonomyImport.objects.create(
            source=source,
            created_by=user,
            status=TaxonomyImport.Status.REFUSED,
            message=error.message,
            problems=[{**error.as_dict(), "level": "error"}],
            duration_ms=int((time.monotonic() - started) * 1000),
        )
    with transaction.atomic():
        record = _apply(taxonomy, source=source, user=user, prune=prune)
        record.duration_ms = int((time.monotonic() - started) * 1000)
        record.save(update_fields=["duration_ms"])
    return record


# Any constant will do: it names the one lock that serialises imports across processes.
IMPORT_LOCK = 0x1AB1_0001
# Documents go in batches of about this many bytes, so that an import holds a few documents' text at a time.
DOCUMENT_BATCH_BYTES = 16 * 1024 * 1024


def _document_names():
    # What a leaf's documents are matters here (name and hash), not their text: leave that in the database.
    return Prefetch("documents", queryset=Document.objects.only("id", "leaf_id", "name", "sha256"))


def _apply(taxonomy: TaxonomyRead, *, source: str, user, prune: bool) -> TaxonomyImport:
    if connection.vendor == "postgresql":
        # Two imports creating the same new leaf would otherwise collide on its unique path.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK])
    valid = taxonomy.valid_leaves
    existing = {
        leaf.path: leaf
        for leaf in Leaf.objects.select_for_update(of=("self",))
        .filter(path__in=[src.folder for src in valid])
        .prefetch_related("seeds", _document_names())
    }
    created, updated, seeds, documents, revisions = [], [], [], [], []
    unchanged = 0
    for src in valid:
        doc_hashes = {name: sha256_text(text) for name, text in src.documents.items()}
        digest = content_hash(src.qna.data, doc_hashes, src.attribution)
        leaf = existing.get(src.folder)
        if leaf is not None and leaf.content_hash == digest:
            unchanged += 1
            continue
        before = None
        if leaf is None:
            leaf = Leaf(path=src.folder, revision=1)
            created.append(leaf)
        else:
            before = leaf_snapshot(leaf, leaf.seeds.all(), {d.name: d.sha256 for d in leaf.documents.all()})
            leaf.revision += 1
            updated.append(leaf)
        leaf_seeds = apply_qna(leaf, src.qna.data)
        leaf.attribution = src.attribution
        leaf.problems = [p.as_dict() for p in src.qna.problems + leaf_warnings(leaf, doc_hashes)]
        leaf.is_valid = True
        leaf.content_hash = digest
        leaf.updated_by = user
        seeds.append(leaf_seeds)
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
            [
                "kind",
                "version",
                "created_by",
                "task_description",
                "domain",
                "document_outline",
                "document_repo",
                "document_commit",
                "document_patterns",
                "attribution",
                "extra",
                "problems",
                "is_valid",
                "content_hash",
                "revision",
                "updated_by",
            ],
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

    removed = 0
    if prune:
        present = {src.folder for src in taxonomy.leaves}
        gone = list(Leaf.objects.exclude(path__in=present).prefetch_related("seeds", _document_names()))
        LeafRevision.objects.bulk_create(
            [
                LeafRevision(
                    leaf=leaf,
                    path=leaf.path,
                    number=leaf.revision + 1,
                    action=LeafRevision.Action.DELETE,
                    author=user,
                    changes=["deleted: not in the imported taxonomy"],
                    snapshot=leaf_snapshot(leaf, leaf.seeds.all(), {d.name: d.sha256 for d in leaf.documents.all()}),
                    content_hash=leaf.content_hash,
                )
                for leaf in gone
            ]
        )
        removed = len(gone)
        Leaf.objects.filter(pk__in=[leaf.pk for leaf in gone]).delete()

    snapshot = TaxonomySnapshot.objects.create(
        name=f"Import of {source}"[:200],
        created_by=user,
        hashes=dict(Leaf.objects.values_list("path", "content_hash")),
    )
    problems = [p.as_dict() for p in taxonomy.problems]
    return TaxonomyImport.objects.create(
        source=source[:1000],
        created_by=user,
        status=TaxonomyImport.Status.SUCCEEDED,
        files_seen=taxonomy.files_seen,
        created=len(created),
        updated=len(updated),
        unchanged=unchanged,
        removed=removed,
        rejected=len(taxonomy.rejected_paths),
        problems=problems,
        snapshot=snapshot,
    )


def _create_documents(documents, user) -> None:
    """Insert the documents of the leaves brought in, reading each text only when its batch is built."""
    batch, held = [], 0
    for leaf, src, hashes in documents:
        for name, text in src.documents.items():
            size = len(text.encode("utf-8"))
            batch.append(
                Document(leaf_id=leaf.pk, name=name, content=text, sha256=hashes[name], size=size, created_by=user)
            )
            held += size
            if held >= DOCUMENT_BATCH_BYTES:
                Document.objects.bulk_create(batch)
                batch, held = [], 0
    Document.objects.bulk_create(batch)
