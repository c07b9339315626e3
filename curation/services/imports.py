"""Import an InstructLab taxonomy: every valid leaf in, every invalid file reported, nothing partial.

Every front door (the import page, `POST /api/imports/`, `manage.py taxonomy_import`) describes its source as an
`ImportSource` and calls `taxonomy_import` (or `taxonomy_import_preview` for a dry run); what may be read, how,
within which limits, and the label recorded are decided here once.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Prefetch

from curation.models import Document, Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot
from curation.qna_map import LEAF_CONTENT_FIELDS, apply_qna
from curation.selectors import leaf_snapshot
from curation.services.content import leaf_warnings, sha256_text
from curation.taxonomy import content_hash
from curation.taxonomy.changes import describe_changes
from curation.taxonomy.source import LeafSource, Limits, TaxonomyRead, read_archive, read_directory, read_git
from labweb.errors import LabError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
SERVER_PATH_REFUSAL = "Importing from a path on the server (a folder or git repository) needs a staff account."


def import_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.LABWEB_IMPORT_MAX_FILE_BYTES,
        max_total_bytes=settings.LABWEB_IMPORT_MAX_TOTAL_BYTES,
        max_files=settings.LABWEB_IMPORT_MAX_FILES,
    )


def _server_path(path: str | Path) -> str:
    return str(Path(str(path).strip()).expanduser().resolve())


@dataclass(frozen=True)
class ImportSource:
    """Where a taxonomy comes from: an uploaded archive, or an archive file, folder or git ref on the server."""

    UPLOAD = "upload"
    ARCHIVE = "archive"
    DIRECTORY = "directory"
    GIT = "git"

    kind: str
    location: str  # the upload's file name, or the resolved path on the server
    ref: str | None = None
    stream: IO[bytes] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def upload(cls, stream: IO[bytes], name: str) -> "ImportSource":
        return cls(cls.UPLOAD, Path(name.replace("\\", "/")).name, stream=stream)

    @classmethod
    def archive_file(cls, path: str | Path) -> "ImportSource":
        return cls(cls.ARCHIVE, _server_path(path))

    @classmethod
    def directory(cls, path: str | Path) -> "ImportSource":
        return cls(cls.DIRECTORY, _server_path(path))

    @classmethod
    def git(cls, path: str | Path, ref: str | None = None) -> "ImportSource":
        return cls(cls.GIT, _server_path(path), ref=(ref or "").strip() or "HEAD")

    @classmethod
    def from_path(cls, path: str | Path, *, ref: str | None = None, working_tree: bool = False) -> "ImportSource":
        """A path given on the command line: an archive file, a git repository (committed tree) or a folder."""
        found = Path(str(path)).expanduser()
        if not found.exists():
            raise LabError(f'"{found}" does not exist.', path=str(found))
        if found.is_file():
            if ref or working_tree:
                raise LabError("--ref and --working-tree apply to a git repository, not to an archive.")
            if not found.name.lower().endswith(ARCHIVE_SUFFIXES):
                raise LabError(f'"{found}" is not a .tar.gz, .tgz, .tar or .zip archive.', path=str(found))
            return cls.archive_file(found)
        if ref and working_tree:
            raise LabError("Give either --ref (a commit) or --working-tree (the files on disk), not both.")
        if working_tree or (not ref and not (found / ".git").exists()):
            return cls.directory(found)
        return cls.git(found, ref)

    @property
    def on_server(self) -> bool:
        return self.kind != self.UPLOAD

    @property
    def label(self) -> str:
        """What the import record and its snapshot are called, whichever front door started it."""
        if self.kind == self.UPLOAD:
            return f"upload {self.location}"
        if self.kind == self.GIT:
            return f"{self.location}@{self.ref}"
        return self.location

    def read(self, limits: Limits) -> TaxonomyRead:
        if self.kind == self.UPLOAD:
            return read_archive(self.stream, self.location, limits)
        if self.kind == self.ARCHIVE:
            try:
                stream = open(self.location, "rb")  # noqa: SIM115 - closed below, after the read
            except OSError as error:
                raise LabError(f'Cannot open "{self.location}": {error.strerror}.', path=self.location) from None
            with stream:
                return read_archive(stream, self.location, limits)
        if self.kind == self.DIRECTORY:
            return read_directory(self.location, limits)
        return read_git(self.location, self.ref, limits)


def _check_access(source: ImportSource, user, from_shell: bool) -> None:
    # Whoever runs manage.py already has the server's files; a web user names server paths only as staff.
    if source.on_server and not from_shell and not getattr(user, "is_staff", False):
        raise PermissionDenied(SERVER_PATH_REFUSAL)


@dataclass
class LeafChange:
    src: LeafSource
    digest: str
    doc_hashes: dict[str, str]
    leaf: Leaf | None  # the current leaf, None for a new one


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
    changes: list[LeafChange] = field(default_factory=list, repr=False)
    # Unchanged leaves whose file now reads differently (comments, layout): export should write the new text.
    retexted: list[Leaf] = field(default_factory=list, repr=False)

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


def taxonomy_import_preview(*, source: ImportSource, user, prune: bool = False, from_shell: bool = False) -> ImportPlan:
    """A dry run: read the source and say what an import would create, update and (with `prune`) remove.

    Changes and records nothing. A source refused as unsafe raises its LabError; a server path needs a staff
    `user` unless `from_shell` (the management command).
    """
    _check_access(source, user, from_shell)
    taxonomy = source.read(import_limits())
    return _plan(taxonomy, source=source.label, prune=prune, lock=False)


def taxonomy_import(
    *,
    source: ImportSource,
    user,
    prune: bool = False,
    allow_remove_all: bool = False,
    from_shell: bool = False,
) -> TaxonomyImport:
    """Read a taxonomy and bring its valid leaves in, in one transaction; return the import's record.

    A leaf whose file is invalid keeps its current content. A source refused as unsafe changes nothing; the
    refusal is still recorded. With `prune`, leaves that the source does not hold at all are deleted, but a prune
    that would delete every leaf is refused unless `allow_remove_all`. An import that changes no leaf leaves the
    diff baseline where it was. A server path needs a staff `user` unless `from_shell` (the management command).
    """
    _check_access(source, user, from_shell)
    label = source.label
    started = time.monotonic()

    def refused(message: str, problems: list[dict]) -> TaxonomyImport:
        return TaxonomyImport.objects.create(
            source=label[:1000],
            created_by=user,
            status=TaxonomyImport.Status.REFUSED,
            message=message,
            problems=problems,
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    try:
        taxonomy = source.read(import_limits())
    except LabError as error:
        return refused(error.message, [{**error.as_dict(), "level": "error"}])
    with transaction.atomic():
        plan = _plan(taxonomy, source=label, prune=prune, lock=True)
        if prune and plan.removes_every_leaf and not allow_remove_all:
            message = remove_all_refusal(plan)
            problem = {"message": message, "field": "prune", "line": None, "path": None, "level": "error"}
            return refused(message, [problem])
        record = _write(plan, user=user)
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


def _plan(taxonomy: TaxonomyRead, *, source: str, prune: bool, lock: bool) -> ImportPlan:
    leaves = Leaf.objects.all()
    if lock:
        if connection.vendor == "postgresql":
            # Two imports creating the same new leaf would otherwise collide on its unique path.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK])
        leaves = leaves.select_for_update(of=("self",)).prefetch_related("seeds", _document_names())
    valid = taxonomy.valid_leaves
    existing = {leaf.path: leaf for leaf in leaves.filter(path__in=[src.folder for src in valid])}
    plan = ImportPlan(
        source=source,
        files_seen=taxonomy.files_seen,
        rejected=len(taxonomy.rejected_paths),
        problems=[p.as_dict() for p in taxonomy.problems],
        created=[],
        updated=[],
        unchanged=0,
        removed=[],
        leaf_count=Leaf.objects.count(),
        prune=prune,
    )
    for src in valid:
        doc_hashes = {name: sha256_text(text) for name, text in src.documents.items()}
        digest = content_hash(src.qna.data, doc_hashes, src.attribution)
        leaf = existing.get(src.folder)
        if leaf is not None and leaf.content_hash == digest:
            plan.unchanged += 1
            if leaf.imported_qna != src.qna.text:
                leaf.imported_qna = src.qna.text
                plan.retexted.append(leaf)
            continue
        (plan.created if leaf is None else plan.updated).append(src.folder)
        plan.changes.append(LeafChange(src, digest, doc_hashes, leaf))
    if prune:
        present = {src.folder for src in taxonomy.leaves}
        plan.removed = list(Leaf.objects.exclude(path__in=present).order_by("path").values_list("path", flat=True))
    return plan


def _write(plan: ImportPlan, *, user) -> TaxonomyImport:
    created, updated, seeds, documents, revisions = [], [], [], [], []
    for change in plan.changes:
        src, digest, doc_hashes = change.src, change.digest, change.doc_hashes
        before = None
        if change.leaf is None:
            leaf = Leaf(path=src.folder, revision=1)
            created.append(leaf)
        else:
            leaf = change.leaf
            before = leaf_snapshot(leaf, leaf.seeds.all(), {d.name: d.sha256 for d in leaf.documents.all()})
            leaf.revision += 1
            updated.append(leaf)
        leaf_seeds = apply_qna(leaf, src.qna.data)
        leaf.imported_qna = src.qna.text
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
    Leaf.objects.bulk_update(plan.retexted, ["imported_qna"], batch_size=500)
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

    if plan.removed:
        gone = list(Leaf.objects.filter(path__in=plan.removed).prefetch_related("seeds", _document_names()))
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
        created=len(created),
        updated=len(updated),
        unchanged=plan.unchanged,
        removed=len(plan.removed),
        rejected=plan.rejected,
        problems=plan.problems,
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
