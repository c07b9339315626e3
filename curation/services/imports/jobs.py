"""Imports (and their dry runs) as jobs on a worker of the default queue, so that no import holds a request.

The request checks what it can at once (who may read the source, whether an upload is an archive at all and
within the size an import may unpack to, whether a server path is a folder), spools an upload into the database
a chunk at a time (any machine's worker can read it) and queues the job. The worker reads the source and runs
the import as `taxonomy_import` runs it, in one transaction that also records the job's end: a job stopped
anywhere (cancelled, its worker killed) changed nothing, and the reaper hands a dead worker's job to the next
worker, which reads the source again from the start. Only one import that writes is active at a time (a database
constraint); a second is refused, naming the first. Progress is published from a thread of its own, because the
import's transaction would hide it until the end.
"""

import logging
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from curation.models import ImportChunk, ImportEvent, ImportJob, TaxonomyImport
from curation.services.imports import ImportPlan, ImportSource, taxonomy_import, taxonomy_import_preview
from curation.services.imports.progress import Progress
from curation.services.imports.sources import check_access, import_limits
from curation.services.imports.write import refusal
from curation.taxonomy.source import check_archive_head
from labweb import jobs
from labweb.errors import ConflictError, LabError

logger = logging.getLogger(__name__)
TASK = "curation.tasks.run_import"
CHUNK_BYTES = 1024 * 1024
# How often a running import publishes its counts (and learns that it was cancelled).
PUBLISH_SECONDS = 0.5
# A dry run's spooled upload is kept this long for the import that confirms it.
SPOOL_DAYS = 1


class ImportRefused(LabError):
    """A source refused before any job was made; the refusal is recorded as every refused import is."""

    def __init__(self, error: LabError, record: TaxonomyImport):
        super().__init__(error.message, field=error.field, line=error.line, path=error.path)
        self.record = record


class Stopped(Exception):
    """The job was cancelled, or another worker holds it now: roll back and leave it."""


def event(job: ImportJob, message: str, *, level: str = ImportEvent.Level.INFO) -> None:
    ImportEvent.objects.create(job=job, level=level, message=message)


def upload_limit() -> int:
    """The most an upload may weigh: what an import may unpack to, plus a tar's header and padding per file."""
    limits = import_limits()
    return limits.max_total_bytes + 1024 * limits.max_files + CHUNK_BYTES


def _check_at_once(source: ImportSource, size: int | None) -> None:
    """What can be refused without reading the source through: the rest is the job's."""
    # The job keeps the path and revision for its worker to read: one cut to fit would name another folder.
    for name, value, what in (("location", source.location, "path"), ("ref", source.ref or "", "revision")):
        limit = ImportJob._meta.get_field(name).max_length
        if len(value) > limit:
            raise LabError(
                f"Refused: the {what} is {len(value):,} characters long; LabWeb stores at most {limit:,}.",
                field="ref" if name == "ref" else source.kind,
            )
    if source.kind == ImportSource.UPLOAD:
        if size is not None and size > upload_limit():
            raise LabError(
                f'Refused: "{source.location}" is {size // (1024 * 1024)} MiB, more than an import may unpack to '
                f"({import_limits().max_total_bytes // (1024 * 1024)} MiB).",
                path=source.location,
            )
        head = source.stream.read(512)
        source.stream.seek(0)
        check_archive_head(head, source.location)
    elif source.kind in (ImportSource.DIRECTORY, ImportSource.GIT, ImportSource.ARCHIVE):
        path = Path(source.location)
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except OSError as error:  # a name longer than the file system takes, say
            raise LabError(f'Cannot read "{path}": {error.strerror}.', path=str(path), field=source.kind) from None
        if source.kind == ImportSource.ARCHIVE and not is_file:
            raise LabError(f'"{path}" is not a file.', path=str(path))
        if source.kind != ImportSource.ARCHIVE and not is_dir:
            raise LabError(f'"{path}" is not a directory.', path=str(path))
        if source.kind == ImportSource.GIT and (source.ref or "").startswith("-"):
            raise LabError(f'"{source.ref}" is not a git revision.', field="ref")


def _spool(job: ImportJob, stream) -> int:
    """Copy the upload into the job's chunks, one at a time (bounded memory); refuse one over the limit."""
    limit, size, seq = upload_limit(), 0, 0
    stream.seek(0)
    while data := stream.read(CHUNK_BYTES):
        size += len(data)
        if size > limit:
            raise LabError(
                f'Refused: "{job.location}" is larger than an import may unpack to '
                f"({import_limits().max_total_bytes // (1024 * 1024)} MiB).",
                path=job.location,
            )
        ImportChunk.objects.create(job=job, seq=seq, data=data)
        seq += 1
    return size


def _active_writer() -> ImportJob | None:
    return ImportJob.objects.filter(status__in=jobs.ACTIVE, dry_run=False).first()


def _conflict(active: ImportJob | None) -> ConflictError:
    if active is None:
        return ConflictError("Another import into the taxonomy is in progress; try again when it has finished.")
    return ConflictError(
        f"Import {active.pk} of {active.label} is {active.status}: one import into the taxonomy at a time. "
        "Try again when it has finished, or cancel it.",
        field="status",
    )


def import_job_create(
    *,
    source: ImportSource | None = None,
    user,
    prune: bool = False,
    allow_remove_all: bool = False,
    dry_run: bool = False,
    confirming: ImportJob | None = None,
) -> ImportJob:
    """Queue an import (or its dry run) of `source`, or of the source of the dry run `confirming`; return the job.

    Raises PermissionDenied for a server path without staff, ImportRefused for a source refused at once (the
    refusal recorded), ConflictError while another import that writes is queued or running.
    """
    if confirming is not None:
        if not confirming.dry_run or confirming.status != jobs.Status.SUCCEEDED:
            raise ConflictError("Only a finished dry run can be confirmed.", field="status")
        source = ImportSource(confirming.source_kind, confirming.location, ref=confirming.ref or None)
    check_access(source, user, from_shell=False)
    if not dry_run and _active_writer() is not None:
        raise _conflict(_active_writer())
    ImportChunk.objects.filter(job__finished_at__lt=timezone.now() - timezone.timedelta(days=SPOOL_DAYS)).delete()
    try:
        if confirming is None:
            _check_at_once(source, getattr(source.stream, "size", None))
        with transaction.atomic():
            try:
                with transaction.atomic():
                    job = ImportJob.objects.create(
                        source_kind=source.kind,
                        location=source.location[:1000],
                        ref=source.ref or "",
                        label=source.label[:1000],
                        dry_run=dry_run,
                        prune=prune,
                        allow_remove_all=allow_remove_all,
                        created_by=user,
                    )
            except IntegrityError:
                raise _conflict(_active_writer()) from None
            if confirming is not None:
                moved = ImportChunk.objects.filter(job=confirming).update(job=job)
                if source.kind == ImportSource.UPLOAD and not moved:
                    raise ConflictError(
                        "The dry run's upload was already imported or has expired: upload the archive again.",
                        field="archive",
                    )
                job.upload_bytes = confirming.upload_bytes
            elif source.kind == ImportSource.UPLOAD:
                job.upload_bytes = _spool(job, source.stream)
            job.save(update_fields=["upload_bytes"])
            what = "Dry run" if dry_run else "Import"
            event(job, f"{what} of {job.label} queued by {user or 'nobody'}{' with prune' if prune else ''}.")
            jobs.send_task_on_commit(TASK, job.pk)
    except ConflictError:
        raise
    except LabError as error:
        record = refusal(source=source.label, user=user, message=error.message, problems=[error.as_dict()])
        raise ImportRefused(error, record) from None
    return job


@transaction.atomic
def import_job_cancel(*, job: ImportJob, user) -> ImportJob:
    jobs.transition(
        job,
        to=jobs.Status.CANCELLED,
        allowed=jobs.ACTIVE,
        refusal="The import is {status}; only a queued or running one can be cancelled.",
    )
    job.chunks.all().delete()
    event(job, f"Cancelled by {user}; nothing was changed.", level=ImportEvent.Level.WARNING)
    return job


def import_jobs_reap() -> int:
    """Queue again the jobs whose worker stopped renewing its lease (their transaction rolled back with it), and
    those whose message no worker took (a second one finds the job held or finished: `import_job_run` claims)."""

    return jobs.reap_kind(
        ImportJob.objects.filter(status__in=jobs.ACTIVE),
        warn=lambda job, message: event(job, message, level=ImportEvent.Level.WARNING),
        send=lambda job: jobs.send_task_on_commit(TASK, job.pk),
        lapsed="Its worker stopped answering; nothing it did was kept, and the job is queued again.",
    )


class _Published(Progress):
    """The counts of a job's import, written to its row every PUBLISH_SECONDS by a thread of its own, on its own
    connection: the import's transaction would hide them until it ends. `check()` asks, in the import's
    transaction (which sees what others committed), whether the job is still this worker's to run, and stops
    the import when it was cancelled or taken over."""

    def __init__(self, job: ImportJob, owner: str):
        super().__init__()
        self.job_pk, self.owner = job.pk, owner
        self.checked = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"import-{job.pk}-progress", daemon=True)

    def __enter__(self) -> "_Published":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        try:
            while not self._done.wait(PUBLISH_SECONDS):
                try:
                    close_old_connections()
                    self.publish()
                except Exception:  # noqa: BLE001 - a database hiccup must not end the import; the next round tries
                    logger.exception("Publishing import %s's progress failed", self.job_pk)
                    connection.close()
        finally:
            connection.close()

    def publish(self) -> None:
        ImportJob.objects.filter(pk=self.job_pk, lease_owner=self.owner, status=jobs.Status.RUNNING).update(
            stage=self.stage,
            files_read=self.files_read,
            leaves_total=self.leaves_total,
            leaves_validated=self.leaves_validated,
            leaves_written=self.leaves_written,
        )

    def check(self) -> None:
        if time.monotonic() - self.checked < PUBLISH_SECONDS:
            return
        self.checked = time.monotonic()
        if not ImportJob.objects.filter(pk=self.job_pk, lease_owner=self.owner, status=jobs.Status.RUNNING).exists():
            raise Stopped


@contextmanager
def _opened(job: ImportJob):
    """The job's source; an upload is copied from its chunks into a temporary file, a chunk at a time."""
    if job.source_kind != ImportSource.UPLOAD:
        yield ImportSource(job.source_kind, job.location, ref=job.ref or None)
        return
    with tempfile.TemporaryFile() as spool:
        size = 0
        for data in job.chunks.order_by("seq").values_list("data", flat=True).iterator(chunk_size=1):
            size += spool.write(data)
        if size != job.upload_bytes:
            raise LabError("The uploaded archive is no longer stored (expired or already imported): upload it again.")
        spool.seek(0)
        yield ImportSource.upload(spool, job.location)


def import_job_run(*, job_id: int) -> str:
    """Run the job on this worker if no live worker holds it: the whole import, or none of it."""
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None or job.status not in jobs.ACTIVE:
        return f"import job {job_id} is {job.status if job else 'gone'}"
    owner = jobs.lease_owner()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now())
    taken = ImportJob.objects.filter(free, pk=job.pk, status__in=jobs.ACTIVE).update(
        lease_owner=owner, lease_until=jobs.lease_until(), attempts=F("attempts") + 1
    )
    if not taken:
        return f"import job {job_id} is held by another worker"
    if not jobs.transition(job, to=jobs.Status.RUNNING, allowed=jobs.ACTIVE):
        return f"import job {job_id} is {job.status}"
    if job.attempts > settings.LABWEB_WORK_MAX_ATTEMPTS:
        return _fail(job, owner, f"Given up after {job.attempts - 1} attempts, each stopped with its worker.")
    if job.attempts > 1:
        event(job, f"Attempt {job.attempts}: reading the source again from the start.")
    try:
        with jobs.lease_kept(ImportJob, job.pk, owner), _Published(job, owner) as progress:
            with _opened(job) as source, transaction.atomic():
                if job.dry_run:
                    _dry_run(job, owner, source, progress)
                else:
                    _import(job, owner, source, progress)
    except Stopped:
        ImportJob.objects.filter(pk=job.pk, lease_owner=owner).update(lease_owner="", lease_until=None)
        job.refresh_from_db()
        return f"import job {job_id} stopped: it is {job.status}"
    except Exception as error:  # noqa: BLE001 - whatever stops a job is recorded on it, never left running
        if not isinstance(error, LabError):
            logger.exception("Import job %s failed", job.pk)
        message = error.message if isinstance(error, LabError) else f"{type(error).__name__}: {error}"
        problems = [error.as_dict()] if isinstance(error, LabError) else []
        return _fail(job, owner, message, problems)
    return f"import job {job_id} {job.status}"


def _dry_run(job: ImportJob, owner: str, source: ImportSource, progress: _Published) -> None:
    plan = taxonomy_import_preview(source=source, user=job.created_by, prune=job.prune, progress=progress)
    _end(job, owner, progress, status=jobs.Status.SUCCEEDED, plan=asdict(plan))
    event(
        job,
        f"Dry run done, nothing changed: {len(plan.created)} would be created, {len(plan.updated)} updated, "
        f"{plan.unchanged} unchanged, {len(plan.removed)} removed; {plan.rejected} files rejected.",
    )


def _import(job: ImportJob, owner: str, source: ImportSource, progress: _Published) -> None:
    record = taxonomy_import(
        source=source,
        user=job.created_by,
        prune=job.prune,
        allow_remove_all=job.allow_remove_all,
        progress=progress,
    )
    succeeded = record.status == TaxonomyImport.Status.SUCCEEDED
    status = jobs.Status.SUCCEEDED if succeeded else jobs.Status.FAILED
    _end(job, owner, progress, status=status, record=record, error="" if succeeded else record.message[:5000])
    job.chunks.all().delete()
    if succeeded:
        event(
            job,
            f"Imported: {record.created} created, {record.updated} updated, {record.unchanged} unchanged, "
            f"{record.removed} removed; {record.rejected} files rejected.",
        )
    else:
        event(job, f"Nothing was changed: {record.message}", level=ImportEvent.Level.ERROR)


def _end(job: ImportJob, owner: str, progress: Progress, *, status: str, **fields) -> None:
    """The job's end, in the import's transaction: only while this worker still holds a running job, so that
    a cancelled or taken-over job rolls everything back, and an import is written exactly once."""
    ended = ImportJob.objects.filter(pk=job.pk, lease_owner=owner, status=jobs.Status.RUNNING).update(
        status=status,
        finished_at=timezone.now(),
        lease_owner="",
        lease_until=None,
        stage=ImportJob.Stage.DONE,
        files_read=progress.files_read,
        leaves_total=progress.leaves_total,
        leaves_validated=progress.leaves_validated,
        leaves_written=progress.leaves_written,
        **fields,
    )
    if not ended:
        raise Stopped
    job.refresh_from_db()


def _fail(job: ImportJob, owner: str, message: str, problems: list[dict] = ()) -> str:
    ImportJob.objects.filter(pk=job.pk, lease_owner=owner).update(lease_owner="", lease_until=None)
    if jobs.transition(job, to=jobs.Status.FAILED, allowed=jobs.ACTIVE, error=message[:5000], problems=problems):
        job.chunks.all().delete()
        event(job, f"Failed, nothing was changed: {message}", level=ImportEvent.Level.ERROR)
    return f"import job {job.pk} {job.status}"


def job_plan(job: ImportJob) -> ImportPlan | None:
    """A finished dry run's plan, as the import page shows it."""
    return ImportPlan(**job.plan) if job.plan else None
