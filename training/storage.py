"""The training storage: where dataset builds and uploads are kept, and where every training node reads them.

`STORAGES["training"]` is the training folder (`LABWEB_TRAINING_DIR`: one machine's disk, or a shared filesystem)
or, where `LABWEB_TRAINING_S3_BUCKET` is set, an S3-compatible bucket through django-storages (`training.s3`).
Files are named as recipes name them, relative to the storage: `datasets/dataset-7/skills.jsonl`,
`uploads/replay.jsonl`. A process that reads a file kept in a bucket downloads it once into its cache
(`LABWEB_TRAINING_CACHE_DIR`), under the sha256 the database recorded for it where there is one, checked as it
comes; the process that wrote a file keeps it there as its copy. Bytes move in chunks, never a whole file in memory.
"""

import hashlib
import os
import posixpath
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages

from labweb.errors import LabError

CHUNK = 1 << 20


def chunks_of(handle) -> Iterator[bytes]:
    with handle:
        yield from iter(lambda: handle.read(CHUNK), b"")


class TrainingDirStorage(FileSystemStorage):
    """The training folder, read from the settings when used (a test or a worker's environment moves it)."""

    @property
    def base_location(self):
        return settings.LABWEB_TRAINING_DIR

    @property
    def location(self):
        return os.path.abspath(self.base_location)

    def stream(self, name: str) -> Iterator[bytes]:
        """The file's bytes a chunk at a time; FileNotFoundError at once where it is not there."""
        return chunks_of(self.open(name, "rb"))


class _Staged(File):
    """A local file handed to a storage: a folder storage moves it into place rather than copying it."""

    def __init__(self, handle, path: Path):
        super().__init__(handle, name=path.name)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def training_storage():
    return storages["training"]


def local_folder() -> Path | None:
    """The folder the storage keeps its files in, where it is a folder on this machine (None: a bucket)."""
    try:
        return Path(training_storage().path(""))
    except NotImplementedError:
        return None


def cache_dir() -> Path:
    return Path(settings.LABWEB_TRAINING_CACHE_DIR or Path(settings.LABWEB_TRAINING_DIR) / "cache")


def clean_name(path: str) -> str | None:
    """A recipe's path as a name in the storage; None where it leads outside it (`..`, a link out of the folder,
    or an absolute path that is not in the training folder)."""
    folder = local_folder()
    if os.path.isabs(path):
        if folder is None:
            return None
        try:
            path = str(Path(path).resolve().relative_to(folder.resolve()))
        except ValueError:
            return None
    name = posixpath.normpath(path)
    if name in (".", "..") or name.startswith(("../", "/")):
        return None
    if folder is not None and not (folder / name).resolve().is_relative_to(folder.resolve()):
        return None
    return name


def storage_name(path: str) -> str:
    """A stored path as recipes name it (rows written before names were relative hold absolute paths)."""
    return clean_name(path) or path


def stored_as(name: str) -> list[str]:
    """What a row's path may hold for the stored file `name`: the name, or (rows written before stored names were
    relative) its absolute path in the training folder."""
    folder = local_folder()
    return [name, str(folder.resolve() / name)] if folder is not None else [name]


def exists(name: str) -> bool:
    folder = local_folder()
    return (folder / name).is_file() if folder is not None else training_storage().exists(name)


def stream(name: str) -> Iterator[bytes]:
    """The stored file's bytes, a chunk at a time; FileNotFoundError at once where it is not there."""
    return training_storage().stream(name)


def _staging() -> Path:
    """Where files are written before they go into the storage: beside the cache, so a move is on one disk."""
    folder = cache_dir() / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def staging_file(name: str) -> Path:
    """A fresh local path to write a file at before it goes into the storage."""
    handle, path = tempfile.mkstemp(prefix=f".{Path(name).name}.", suffix=".partial", dir=_staging())
    os.close(handle)
    return Path(path)


def staging_folder() -> Path:
    """A fresh local folder for a build's files before they go into the storage."""
    return Path(tempfile.mkdtemp(prefix="build-", dir=_staging()))


def _cached(name: str, sha256: str) -> Path:
    # Named by content where the database knows it (a rebuilt dataset gets a fresh copy); uploads are never
    # replaced, so their name is enough.
    return cache_dir() / ("sha256" / Path(f"{sha256}.jsonl") if sha256 else "named" / Path(name))


def store_file(path: Path, name: str, *, replace: bool = False, sha256: str = "") -> bool:
    """Put the local file at `path` into the storage as `name`: moved where the storage is a folder, streamed up
    to a bucket (and then kept as this machine's cached copy of `name`). False, and nothing stored, where a file
    of that name was there first; `replace` replaces it instead (a build written again)."""
    store = training_storage()
    if replace:
        store.delete(name)
    with path.open("rb") as handle:
        saved = store.save(name, _Staged(handle, path))
    if saved != name:  # the storage chose another name: one of this name came first
        store.delete(saved)
        return False
    if local_folder() is None:
        target = _cached(name, sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
    return True


def local_copy(name: str, *, sha256: str = "") -> Path:
    """A path on this machine to read the stored file at: in the training folder, the file itself; from a bucket,
    this machine's cached copy, downloaded once and checked against `sha256` where given (a file that differs
    is refused and not kept)."""
    folder = local_folder()
    if folder is not None:
        return folder / name
    target = _cached(name, sha256)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}")
    digest = hashlib.sha256()
    try:
        try:
            with partial.open("wb") as sink:
                for chunk in stream(name):
                    digest.update(chunk)
                    sink.write(chunk)
        except FileNotFoundError:
            raise LabError(f"{name} is not in the training storage.", path=name) from None
        if sha256 and digest.hexdigest() != sha256:
            raise LabError(
                f"{name} in the training storage is not the file its build wrote: its sha256 is "
                f"{digest.hexdigest()[:12]}…, the build recorded {sha256[:12]}….",
                path=name,
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target
