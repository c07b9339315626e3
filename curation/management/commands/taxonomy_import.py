import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from curation.management.commands._report import write_import, write_plan
from curation.models import ImportJob, TaxonomyImport
from curation.services import ImportSource, taxonomy_import, taxonomy_import_preview
from curation.services.imports import Progress
from labweb import jobs
from labweb.errors import LabError


class Printed(Progress):
    """The import's progress on stderr (stdout keeps the report): each stage, then its counts every 2 s."""

    EVERY = 2.0

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.last = time.monotonic()

    def begin(self, stage: str) -> None:
        super().begin(stage)
        if stage == ImportJob.Stage.READING:
            self.out.write("Reading the files…")
        else:
            self.out.write(f"{self.files_read} files read; validating and writing the leaves…")

    def changed(self) -> None:
        if time.monotonic() - self.last >= self.EVERY:
            self.last = time.monotonic()
            if self.stage == ImportJob.Stage.READING:
                self.out.write(f"  {self.files_read} files read")
            else:
                self.out.write(
                    f"  {self.leaves_validated} of {self.leaves_total} leaves validated, {self.leaves_written} written"
                )


class Command(BaseCommand):
    help = (
        "Import an InstructLab taxonomy from a directory, a local git repository (the committed tree of "
        "--ref, HEAD by default) or a .tar.gz/.tgz/.tar/.zip archive. Valid leaves are created or updated; "
        "every rejected file is listed with the reason."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="Taxonomy directory, git repository or archive file.")
        parser.add_argument("--ref", help="Git revision to import (default HEAD); the source must be a git repository.")
        parser.add_argument(
            "--working-tree",
            action="store_true",
            help="Read the files of a git repository's directory as they are, not a commit.",
        )
        parser.add_argument("--prune", action="store_true", help="Delete the leaves that the source does not hold.")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Change nothing: list what the import would create, update and (with --prune) remove.",
        )
        parser.add_argument(
            "--allow-remove-all",
            action="store_true",
            help="Let --prune remove every leaf of the taxonomy (refused otherwise).",
        )
        parser.add_argument("--user", help="Username recorded as the author of the import (default: none).")
        parser.add_argument("--strict", action="store_true", help="Exit with status 1 when any file was rejected.")

    def handle(self, *args, source, ref, working_tree, prune, dry_run, allow_remove_all, user, strict, **options):
        author = self._user(user)
        try:
            found = ImportSource.from_path(source, ref=ref, working_tree=working_tree)
            if dry_run:
                plan = taxonomy_import_preview(
                    source=found, user=author, prune=prune, from_shell=True, progress=Printed(self.stderr)
                )
                write_plan(self, plan)
                return
        except LabError as error:
            raise CommandError(error.message) from None
        running = ImportJob.objects.filter(status=jobs.Status.RUNNING, dry_run=False).first()
        if running is not None:
            self.stderr.write(f"{running} is running on a worker: this import waits until it has finished.")
        record = taxonomy_import(
            source=found,
            user=author,
            prune=prune,
            allow_remove_all=allow_remove_all,
            from_shell=True,
            progress=Printed(self.stderr),
        )
        if record.status == TaxonomyImport.Status.REFUSED:
            raise CommandError(record.message)
        write_import(self, record)
        if record.status == TaxonomyImport.Status.FAILED:
            raise CommandError(record.message)
        if strict and record.rejected:
            raise CommandError(f"{record.rejected} files were rejected (--strict).")

    def _user(self, username: str | None):
        if not username:
            return None
        model = get_user_model()
        try:
            return model.objects.get(**{model.USERNAME_FIELD: username})
        except model.DoesNotExist:
            raise CommandError(f'There is no user "{username}".') from None
