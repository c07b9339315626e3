"""What an import would do, found without holding the source: the leaves it names as they are now (hashes, no
text), then each leaf parsed in turn and counted as created, updated or unchanged."""

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models.functions import MD5

from curation.models import Leaf
from curation.services.content import sha256_text
from curation.taxonomy import content_hash
from curation.taxonomy.source import TaxonomyRead

if TYPE_CHECKING:
    from curation.services.imports.progress import Progress
    from curation.services.imports.write import Batch


@dataclass
class ImportPlan:
    """What an import of a source would do to the taxonomy as it is now. A dry run returns it, changing nothing."""

    source: str
    files_seen: int
    rejected: int
    problems: list[dict]
    created: list[str]
    updated: list[str]
    unchanged: int
    removed: list[str]
    leaf_count: int  # leaves before the import
    prune: bool

    @property
    def removes_every_leaf(self) -> bool:
        return self.leaf_count > 0 and len(self.removed) == self.leaf_count

    @property
    def changes_nothing(self) -> bool:
        return not (self.created or self.updated or self.removed)

    @property
    def imports_nothing(self) -> bool:
        """Every file was rejected: the source held no valid leaf at all."""
        return self.rejected > 0 and not (self.created or self.updated or self.unchanged)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "source": self.source,
            "files_seen": self.files_seen,
            "created": len(self.created),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
            "removed": len(self.removed),
            "rejected": self.rejected,
            "created_paths": self.created,
            "updated_paths": self.updated,
            "removed_paths": self.removed,
            "removes_every_leaf": self.removes_every_leaf,
            "problems": self.problems,
        }


def remove_all_refusal(plan: ImportPlan) -> str:
    return (
        f"Refused: this import with prune would remove every leaf of the taxonomy ({plan.leaf_count}), as the source "
        "holds none of their paths. Check the source; to remove them all anyway, allow removing every leaf "
        "explicitly (allow_remove_all, --allow-remove-all)."
    )


# Any constant will do: it names the one lock that serialises imports across processes.
IMPORT_LOCK = 0x1AB1_0001


@dataclass(frozen=True)
class Known:
    """A leaf of the taxonomy as an import compares it: enough to tell unchanged from changed without its text."""

    pk: int
    content_hash: str
    qna_md5: str | None


def plan_import(taxonomy: TaxonomyRead, *, source: str, prune: bool, lock: bool) -> tuple[ImportPlan, dict[str, Known]]:
    """The plan before any file is parsed: the leaves the source names, as they are now, and what a prune removes."""
    leaves = Leaf.objects.all()
    if lock:
        if connection.vendor == "postgresql":
            # Two imports creating the same new leaf would otherwise collide on its unique path.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK])
        leaves = leaves.select_for_update()
    folders = taxonomy.folders
    rows = leaves.filter(path__in=folders).values_list("path", "pk", "content_hash", MD5("imported_qna"))
    known = {path: Known(pk, digest, qna_md5) for path, pk, digest, qna_md5 in rows}
    plan = ImportPlan(
        source=source,
        files_seen=taxonomy.files_seen,
        rejected=0,
        problems=[],
        created=[],
        updated=[],
        unchanged=0,
        removed=[],
        leaf_count=Leaf.objects.count(),
        prune=prune,
    )
    if prune:
        plan.removed = list(Leaf.objects.exclude(path__in=folders).order_by("path").values_list("path", flat=True))
    return plan, known


def walk(
    taxonomy: TaxonomyRead, plan: ImportPlan, known: dict[str, Known], batch: "Batch | None", progress: "Progress"
) -> None:
    """Parse the source leaf by leaf and count what changes; with a batch, write it (a dry run passes none)."""
    progress.leaves_found(taxonomy.leaf_count)
    for src in taxonomy.leaves():
        progress.leaf_validated()
        if not src.qna.valid:
            continue
        doc_hashes = {name: sha256_text(text) for name, text in src.documents.items()}
        digest = content_hash(src.qna.data, doc_hashes, src.attribution)
        old = known.get(src.folder)
        if old is not None and old.content_hash == digest:
            plan.unchanged += 1
            # The same data written differently (comments, layout): export should write the new text.
            if batch is not None and old.qna_md5 != hashlib.md5(src.qna.text.encode("utf-8")).hexdigest():
                batch.retext(old.pk, src.qna.text)
            continue
        (plan.created if old is None else plan.updated).append(src.folder)
        if batch is not None:
            batch.change(src, digest, doc_hashes, old)
    if batch is not None:
        batch.flush()
    progress.leaves_validated = taxonomy.leaf_count  # those refused before parsing (misplaced, too big) too
    progress.changed()
    plan.problems = [p.as_dict() for p in taxonomy.problems]
    plan.rejected = len(taxonomy.rejected_paths)
