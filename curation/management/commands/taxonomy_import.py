from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from curation.management.commands._report import write_import
from curation.models import TaxonomyImport
from curation.services import taxonomy_import
from curation.services.imports import import_limits
from curation.taxonomy.source import read_archive, read_directory, read_git
from labweb.errors import LabError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


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
        parser.add_argument("--user", help="Username recorded as the author of the import (default: none).")
        parser.add_argument("--strict", action="store_true", help="Exit with status 1 when any file was rejected.")

    def handle(self, *args, source, ref, working_tree, prune, user, strict, **options):
        author = self._user(user)
        read, label = self._reader(Path(source).expanduser(), ref=ref, working_tree=working_tree)
        record = taxonomy_import(read=read, source=label, user=author, prune=prune)
        if record.status == TaxonomyImport.Status.REFUSED:
            raise CommandError(record.message)
        write_import(self, record)
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

    def _reader(self, path: Path, *, ref: str | None, working_tree: bool):
        limits = import_limits()
        if not path.exists():
            raise CommandError(f'"{path}" does not exist.')
        path = path.resolve()
        if path.is_file():
            if ref or working_tree:
                raise CommandError("--ref and --working-tree apply to a git repository, not to an archive.")
            if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
                raise CommandError(f'"{path}" is not a .tar.gz, .tgz, .tar or .zip archive.')

            def read_file():
                try:
                    stream = open(path, "rb")
                except OSError as error:
                    raise LabError(f'Cannot open "{path}": {error.strerror}.', path=str(path)) from None
                with stream:
                    return read_archive(stream, path.name, limits)

            return read_file, str(path)
        if ref and working_tree:
            raise CommandError("Give either --ref (a commit) or --working-tree (the files on disk), not both.")
        if working_tree or (not ref and not (path / ".git").exists()):
            return (lambda: read_directory(path, limits)), str(path)
        ref = ref or "HEAD"
        return (lambda: read_git(path, ref, limits)), f"{path}@{ref}"
