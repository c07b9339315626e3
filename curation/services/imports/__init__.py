"""Import an InstructLab taxonomy: every valid leaf in, every invalid file reported, nothing partial.

Every front door describes its source as an `ImportSource`. The import page and `POST /api/imports/` queue a job
(`jobs.import_job_create`) whose worker calls `taxonomy_import` (or `taxonomy_import_preview` for a dry run);
`manage.py taxonomy_import` calls them in its own process. What may be read, how, within which limits, and the
label recorded are decided here once.
"""

import time

from django.db import transaction

from curation.models import ImportJob, TaxonomyImport
from curation.services.imports.plan import ImportPlan, plan_import, remove_all_refusal, walk
from curation.services.imports.progress import Progress
from curation.services.imports.sources import (
    ARCHIVE_SUFFIXES,
    SERVER_PATH_REFUSAL,
    ImportSource,
    check_access,
    import_limits,
)
from curation.services.imports.write import Batch, finish, refusal
from labweb.errors import LabError

Stage = ImportJob.Stage

__all__ = [
    "ARCHIVE_SUFFIXES",
    "SERVER_PATH_REFUSAL",
    "ImportPlan",
    "ImportSource",
    "Progress",
    "remove_all_refusal",
    "taxonomy_import",
    "taxonomy_import_preview",
]


def taxonomy_import_preview(
    *,
    source: ImportSource,
    user,
    prune: bool = False,
    from_shell: bool = False,
    progress: Progress | None = None,
) -> ImportPlan:
    """A dry run: read the source and say what an import would create, update and (with `prune`) remove.

    Changes and records nothing. A source refused as unsafe raises its LabError; a server path needs a staff
    `user` unless `from_shell` (the management command). `progress` is told how far it got.
    """
    check_access(source, user, from_shell)
    progress = progress or Progress()
    progress.begin(Stage.READING)
    taxonomy = source.read(import_limits(), on_file=progress.file_read)
    progress.begin(Stage.IMPORTING)
    plan, known = plan_import(taxonomy, source=source.label, prune=prune, lock=False)
    walk(taxonomy, plan, known, None, progress)
    return plan


def taxonomy_import(
    *,
    source: ImportSource,
    user,
    prune: bool = False,
    allow_remove_all: bool = False,
    from_shell: bool = False,
    progress: Progress | None = None,
) -> TaxonomyImport:
    """Read a taxonomy and bring its valid leaves in, in one transaction; return the import's record.

    The leaves are parsed and written a batch at a time (see BATCH_BYTES), so memory follows the largest file,
    not the source; the one transaction still makes the import all or nothing.

    A leaf whose file is invalid keeps its current content. A source refused as unsafe changes nothing; the
    refusal is still recorded. With `prune`, leaves that the source does not hold at all are deleted, but a prune
    that would delete every leaf is refused unless `allow_remove_all`. An import that changes no leaf leaves the
    diff baseline where it was. A server path needs a staff `user` unless `from_shell` (the management command).
    `progress` is told how far it got, and may stop it (what its `check()` raises rolls everything back).
    """
    check_access(source, user, from_shell)
    progress = progress or Progress()
    label = source.label
    started = time.monotonic()

    def refused(message: str, problems: list[dict]) -> TaxonomyImport:
        duration_ms = int((time.monotonic() - started) * 1000)
        return refusal(source=label, user=user, message=message, problems=problems, duration_ms=duration_ms)

    progress.begin(Stage.READING)
    try:
        taxonomy = source.read(import_limits(), on_file=progress.file_read)
    except LabError as error:
        return refused(error.message, [error.as_dict()])
    progress.begin(Stage.IMPORTING)
    with transaction.atomic():
        plan, known = plan_import(taxonomy, source=label, prune=prune, lock=True)
        if prune and plan.removes_every_leaf and not allow_remove_all:
            message = remove_all_refusal(plan)
            problem = {"message": message, "field": "prune", "line": None, "path": None}
            return refused(message, [problem])
        walk(taxonomy, plan, known, Batch(user, progress), progress)
        record = finish(plan, user=user)
        record.duration_ms = int((time.monotonic() - started) * 1000)
        record.save(update_fields=["duration_ms"])
    return record
