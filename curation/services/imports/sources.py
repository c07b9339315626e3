"""Where an import reads from, and who may name it: an upload, or an archive, folder or git ref on the server."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.exceptions import PermissionDenied

from curation.taxonomy.source import Limits, OnFile, TaxonomyRead, read_archive, read_directory, read_git
from labweb.errors import LabError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
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
                raise LabError(
                    f'"{found}" is not a .tar.gz, .tgz, .tar, .tar.bz2, .tar.xz or .zip archive.', path=str(found)
                )
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

    def read(self, limits: Limits, on_file: OnFile = None) -> TaxonomyRead:
        if self.kind == self.UPLOAD:
            return read_archive(self.stream, self.location, limits, on_file)
        if self.kind == self.ARCHIVE:
            try:
                stream = open(self.location, "rb")  # noqa: SIM115 - closed below, after the read
            except OSError as error:
                raise LabError(f'Cannot open "{self.location}": {error.strerror}.', path=self.location) from None
            with stream:
                return read_archive(stream, self.location, limits, on_file)
        if self.kind == self.DIRECTORY:
            return read_directory(self.location, limits, on_file)
        return read_git(self.location, self.ref, limits, on_file)


def check_access(source: ImportSource, user, from_shell: bool) -> None:
    # Whoever runs manage.py already has the server's files; a web user names server paths only as staff.
    if source.on_server and not from_shell and not getattr(user, "is_staff", False):
        raise PermissionDenied(SERVER_PATH_REFUSAL)
