"""Read the files of a taxonomy from a directory, a git repository or an archive, refusing anything unsafe.

Unsafe input (a path that escapes the root, a link in an archive, a symlink out of the root, more data or
files than the limits) stops the whole import with a LabError: nothing from such a source is trusted.
A single file over the size limit is only that file's problem. An archive must be whole: one that is not
gzip, bzip2, xz, tar or zip, holds no files, or ends anywhere but at tar's end-of-archive marker (a cut-off
upload would otherwise read as a smaller taxonomy, and a prune would delete the rest) is refused.
"""

import bz2
import gzip
import io
import lzma
import os
import posixpath
import stat
import subprocess
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from curation.taxonomy.problems import Problem
from curation.taxonomy.qna import KINDS, QnaFile, folder_of, read_qna
from curation.taxonomy.storage import DOCUMENT_NAME_MAX, LEAF_PATH_MAX, UNSTORABLE, unstorable_reason
from labweb.errors import LabError

QNA = "qna.yaml"
ATTRIBUTION = "attribution.txt"
DOCUMENT_SUFFIXES = (".md", ".markdown")
SKIP_DIRS = {".git", ".github", ".venv", "__pycache__", "node_modules"}


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 2 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_files: int = 50_000


# The problems an import lists (its record keeps them): past this, files are still counted as rejected.
MAX_SOURCE_PROBLEMS = 10_000

# Told the count of files read so far as each one is counted, so that whoever runs a long read can show it.
OnFile = Callable[[int], None] | None


class _Spool:
    """The files read from a source, in a temporary file rather than in memory until the import reads them:
    an import then holds a few of them at a time, not the whole source."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()

    def put(self, data: bytes) -> "_Spooled":
        offset = self.file.seek(0, os.SEEK_END)
        self.file.write(data)
        return _Spooled(self, offset, len(data))


@dataclass(frozen=True)
class _Spooled:
    spool: _Spool
    offset: int
    size: int

    def read(self) -> bytes:
        self.spool.file.seek(self.offset)
        return self.spool.file.read(self.size)


class SpooledTexts(Mapping):
    """Document name -> text, each text read from the spool when asked for."""

    def __init__(self):
        self._refs: dict[str, _Spooled] = {}

    def add(self, name: str, ref: _Spooled) -> None:
        self._refs[name] = ref

    def __getitem__(self, name: str) -> str:
        return self._refs[name].read().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def size(self, name: str) -> int:
        """The bytes of a document, without reading it."""
        return self._refs[name].size


@dataclass
class LeafSource:
    """One leaf folder as found in a source: its qna.yaml and the files beside it."""

    folder: str
    qna: QnaFile
    attribution: str = ""
    documents: Mapping[str, str] = field(default_factory=SpooledTexts)


class TaxonomyRead:
    """The files of a source, spooled and not yet parsed. `leaves()` parses them one leaf at a time, so that an
    import holds one leaf's data (and a few documents) at a time, not the whole source; `problems` is complete
    once it has run to the end."""

    def __init__(self, files: dict[str, _Spooled | None], limits: Limits):
        self._files = files
        self._limits = limits
        self.files_seen = len(files)
        self.problems: list[Problem] = []
        self._rejected: set[str] = set()
        self._beside: dict[str, list[str]] = {}
        for rel in files:
            if posixpath.basename(rel) != QNA:
                self._beside.setdefault(folder_of(rel), []).append(rel)
        self._qna_paths = sorted(p for p in files if posixpath.basename(p) == QNA)

    @property
    def leaf_count(self) -> int:
        """The qna.yaml files the source holds, each one leaf to validate."""
        return len(self._qna_paths)

    @property
    def folders(self) -> set[str]:
        """Every leaf folder the source holds a qna.yaml for, valid or not: what a prune keeps."""
        return {folder_of(p) for p in self._qna_paths if folder_of(p) and _place_problem(p, folder_of(p)) is None}

    @property
    def rejected_paths(self) -> list[str]:
        return sorted(self._rejected)

    def leaves(self) -> Iterator[LeafSource]:
        """Each leaf folder in a taxonomy root, parsed (valid or not; `qna.valid` says), in path order."""
        self.problems, self._rejected, unlisted = [], set(), []
        for path in self._qna_paths:
            found: list[Problem] = []
            leaf = self._leaf(path, found)
            self._rejected.update(p.path for p in found if p.level == "error")
            room = MAX_SOURCE_PROBLEMS - len(self.problems)
            self.problems += found[:room]
            unlisted += found[room:][:1]  # the first one left out, to name where the listing stops
            if leaf is not None:
                yield leaf
        if unlisted:
            self.problems.append(
                Problem(unlisted[0].path, f"More problems follow; LabWeb lists the first {MAX_SOURCE_PROBLEMS:,}.")
            )

    def _leaf(self, path: str, problems: list[Problem]) -> LeafSource | None:
        """The leaf of the qna.yaml at `path`, or None where the file cannot be one; its problems go to `problems`."""
        ref, folder, limits = self._files[path], folder_of(path), self._limits
        if not folder:
            problems.append(Problem(path, "A qna.yaml must sit in a leaf folder, not at the taxonomy root."))
            return None
        if ref is None:
            problems.append(_too_big(path, limits))
            return None
        qna = read_qna(ref.read(), path)
        place = _place_problem(path, folder)
        if place is not None:
            # Say what else is wrong with it too, so that moving the file is not the first of several rounds.
            problems += [place, *qna.problems]
            return None
        problems += qna.problems
        leaf = LeafSource(folder=folder, qna=qna)
        for rel in sorted(self._beside.get(folder, ())):
            ref = self._files[rel]
            content = ref.read() if ref is not None else None
            name = posixpath.basename(rel)
            if content is None:
                problem = Problem(
                    rel,
                    f"The file is larger than the {limits.max_file_bytes // 1024} KiB limit, "
                    f"so its leaf {folder} is not imported.",
                )
            else:
                try:
                    text = content.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problem = Problem(
                        rel,
                        f"The file is not UTF-8 text, so its leaf {folder} is not imported.",
                        line=content[: exc.start].count(b"\n") + 1,
                    )
                else:
                    problem = _stored_file_problem(rel, name, text, folder)
            if problem is not None:
                problems.append(problem)
                leaf.qna.problems.append(problem)
                continue
            if name == ATTRIBUTION:
                leaf.attribution = text
            else:
                leaf.documents.add(name, ref)
        return leaf


def _wanted(path: str) -> bool:
    name = posixpath.basename(path)
    return name == QNA or name == ATTRIBUTION or name.lower().endswith(DOCUMENT_SUFFIXES)


def _clean(name: str) -> str:
    """A member name as a safe relative POSIX path, or a LabError naming it."""
    path = name.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise LabError(f'Refused: "{name}" is an absolute path.', path=name)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LabError(f'Refused: "{name}" points outside the taxonomy (path traversal).', path=name)
    return "/".join(parts)


class _Budget:
    def __init__(self, limits: Limits, on_file: OnFile = None):
        self.limits = limits
        self.files = 0
        self.total = 0
        self.on_file = on_file

    def count(self, name: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise LabError(f"Refused: the source holds more than {self.limits.max_files} files.", path=name)
        if self.on_file is not None:
            self.on_file(self.files)

    def add(self, size: int, name: str) -> None:
        """Count bytes the source unpacks to, read or skipped; refuse before reading past the total limit."""
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise LabError(
                f"Refused: the source unpacks to more than {self.limits.max_total_bytes // (1024 * 1024)} MiB "
                f'by "{name}" (a decompression bomb?).',
                path=name,
            )

    def read(self, stream, name: str, size_hint: int | None, counted: bool = False) -> bytes | None:
        """At most max_file_bytes of a stream; None when the file is over the per-file limit."""
        limit = self.limits.max_file_bytes
        if size_hint is not None and size_hint > limit:
            return None
        data = stream.read(limit + 1)
        if not counted:
            self.add(len(data), name)
        return None if len(data) > limit else data


def _keep(files: dict, spool: _Spool, rel: str, data: bytes | None) -> None:
    files[rel] = spool.put(data) if data is not None else None


def _too_big(path: str, limits: Limits) -> Problem:
    return Problem(path, f"The file is larger than the {limits.max_file_bytes // 1024} KiB limit.", line=None)


def read_directory(root: str | os.PathLike, limits: Limits = Limits(), on_file: OnFile = None) -> TaxonomyRead:
    root = Path(root).resolve()
    if not root.is_dir():
        raise LabError(f'"{root}" is not a directory.', path=str(root))
    budget = _Budget(limits, on_file)
    files: dict[str, _Spooled | None] = {}
    spool = _Spool()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if not _wanted(rel):
                continue
            budget.count(rel)
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(root):
                    raise LabError(f'Refused: "{rel}" is a symlink to "{target}", outside the taxonomy root.', path=rel)
            if not full.is_file():
                continue
            try:
                with open(full, "rb") as stream:
                    _keep(files, spool, rel, budget.read(stream, rel, full.stat().st_size))
            except OSError as exc:
                raise LabError(f'Cannot read "{rel}": {exc.strerror or exc}.', path=rel) from None
    return TaxonomyRead(files, limits)


NOT_AN_ARCHIVE = "is not a gzip/tar/zip archive"
# Each opener reads a stream: GzipFile takes it as `fileobj`, BZ2File and LZMAFile as their first argument.
_COMPRESSIONS = {
    b"\x1f\x8b": lambda stream: gzip.GzipFile(fileobj=stream, mode="rb"),
    b"BZh": lambda stream: bz2.BZ2File(stream, mode="rb"),
    b"\xfd7zXZ\x00": lambda stream: lzma.LZMAFile(stream, mode="rb"),
}


def read_archive(stream, filename: str, limits: Limits = Limits(), on_file: OnFile = None) -> TaxonomyRead:
    """A `.tar.gz`/`.tgz`/`.tar` or `.zip` archive, streamed without touching the disk; its content decides."""
    start = stream.tell() if _seekable(stream) else None
    head = stream.read(512)
    if start is not None:
        stream.seek(start)
    else:
        stream = _Replay(head, stream)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if start is None:
            raise LabError(f'Refused: "{filename}" is a zip archive read from a stream; zip needs a file.')
        return _read_zip(stream, limits, filename, on_file)
    for magic, opener in _COMPRESSIONS.items():
        if head.startswith(magic):
            return _read_tar(opener(stream), limits, filename, on_file)
    if _is_tar_header(head):
        return _read_tar(stream, limits, filename, on_file)
    raise LabError(f'Refused: "{filename}" {NOT_AN_ARCHIVE}.', path=filename)


def check_archive_head(head: bytes, filename: str) -> None:
    """Refuse at once what `read_archive` would refuse from its first 512 bytes: not an archive at all."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", *_COMPRESSIONS)) or _is_tar_header(head):
        return
    raise LabError(f'Refused: "{filename}" {NOT_AN_ARCHIVE}.', path=filename)


def _is_tar_header(block: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _seekable(stream) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, OSError, ValueError):
        return False


class _Replay(io.RawIOBase):
    """The bytes already read to recognise a stream that cannot seek back, then the rest of it."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream, self.pos = head, stream, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.pos < len(self.head):
            chunk = self.head[self.pos : self.pos + len(buffer)]
        else:
            chunk = self.stream.read(len(buffer))
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def read_git(
    repo: str | os.PathLike, ref: str = "HEAD", limits: Limits = Limits(), on_file: OnFile = None
) -> TaxonomyRead:
    """The tree of `ref` in a local git repository (committed content, not the working copy)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise LabError(f'"{repo}" is not a directory.', path=str(repo))
    if ref.startswith("-"):
        raise LabError(f'"{ref}" is not a git revision.', field="ref")
    try:
        # Streamed: a repository over the limits is refused without its whole archive in memory.
        process = subprocess.Popen(
            ["git", "-C", str(repo), "archive", "--format=tar", ref, "--"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise LabError("git is not installed on this server.") from None
    try:
        head = process.stdout.read(512)
        if not head:
            process.wait(timeout=300)
            message = process.stderr.read().decode("utf-8", "replace").strip()
            raise LabError(f'Cannot read revision "{ref}" of the git repository "{repo}": {message}', path=str(repo))
        return _read_tar(_Replay(head, process.stdout), limits, f"{repo}@{ref}", on_file)
    finally:
        process.stdout.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()


# A GNU long name or a pax record comes before the member it describes, and the tar module reads it whole into
# memory before handing the member over: one is refused past this size, and each counts to the total limit.
HEADER_EXTENSION_MAX = 1024 * 1024
_HEADER_EXTENSIONS = {
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
}


class _EndMarked(tarfile.TarInfo):
    """Notes on its archive whether reading stopped at the end-of-archive marker or at a plain end of data, and
    bounds the header extensions read before a member (a subclass per read binds `budget` and `source`)."""

    budget: "_Budget"
    source: str

    @classmethod
    def fromtarfile(cls, archive):
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:
            archive.labweb_end_marker = True
            raise

    def _proc_member(self, archive):
        if self.type in _HEADER_EXTENSIONS:
            if self.size > HEADER_EXTENSION_MAX:
                raise LabError(
                    f'Refused: "{self.source}" holds a tar header extension (a long name or pax record) of '
                    f"{self.size:,} bytes; LabWeb reads at most {HEADER_EXTENSION_MAX // 1024} KiB of one.",
                    path=self.source,
                )
            self.budget.add(self.size, self.source)
        return super()._proc_member(archive)


def _read_tar(stream, limits: Limits, name: str = "the archive", on_file: OnFile = None) -> TaxonomyRead:
    budget = _Budget(limits, on_file)
    files: dict[str, _Spooled | None] = {}
    spool = _Spool()
    last = None
    try:
        member_type = type("_Member", (_EndMarked,), {"budget": budget, "source": name})
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=member_type) as archive:
            for member in archive:
                last = member.name
                budget.add(member.size, member.name)
                if member.isdir() or member.type == tarfile.XGLTYPE or member.name == "pax_global_header":
                    continue
                rel = _clean(member.name)
                if member.issym() or member.islnk():
                    raise LabError(
                        f'Refused: "{member.name}" is a link; archives may hold only files and folders.',
                        path=member.name,
                    )
                if not member.isfile():
                    raise LabError(f'Refused: "{member.name}" is not a regular file.', path=member.name)
                budget.count(rel)
                if not _wanted(rel):
                    continue
                if member.size > limits.max_file_bytes:
                    files[rel] = None
                    continue
                _keep(files, spool, rel, budget.read(archive.extractfile(member), rel, member.size, counted=True))
            ended = getattr(archive, "labweb_end_marker", False)
        if last is None:
            raise LabError(f'Refused: "{name}" holds no files (no tar archive inside it?).', path=name)
        if not ended:
            raise LabError(
                f'Refused: "{name}" is cut short: it ends after "{last}" without the end-of-archive marker, '
                "so it may lack files. Upload it again.",
                path=name,
            )
        # Read the compression to its end, so that a damaged or truncated stream (bad CRC) is refused too.
        while chunk := stream.read(1024 * 1024):
            budget.add(len(chunk), name)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, tarfile.ReadError) and str(exc) in ("empty file", "bad checksum", "invalid header"):
            raise LabError(f'Refused: "{name}" {NOT_AN_ARCHIVE} (it holds no tar inside).', path=name) from None
        raise LabError(f'Refused: "{name}" is damaged or cut short and cannot be read: {exc}.', path=name) from None
    return TaxonomyRead(_strip_wrapper(files), limits)


def _read_zip(stream, limits: Limits, name: str, on_file: OnFile = None) -> TaxonomyRead:
    budget = _Budget(limits, on_file)
    files: dict[str, _Spooled | None] = {}
    spool = _Spool()
    try:
        # ZipFile reads the whole central directory at once: refuse one that lists too many entries before it does.
        end = zipfile._EndRecData(stream)
        if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > 2 * limits.max_files:
            raise LabError(
                f'Refused: "{name}" lists {end[zipfile._ECD_ENTRIES_TOTAL]:,} entries; an import reads at most '
                f"{limits.max_files:,} files (and their folders).",
                path=name,
            )
        with zipfile.ZipFile(stream) as archive:
            infos = archive.infolist()
            if not infos:
                raise LabError(f'Refused: "{name}" is a zip archive that holds no files.', path=name)
            declared = sum(info.file_size for info in infos)
            if declared > limits.max_total_bytes:
                raise LabError(
                    f"Refused: the archive unpacks to {declared // (1024 * 1024)} MiB, more than the "
                    f"{limits.max_total_bytes // (1024 * 1024)} MiB limit (a decompression bomb?)."
                )
            for info in infos:
                if info.is_dir():
                    continue
                rel = _clean(info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise LabError(
                        f'Refused: "{info.filename}" is a link; archives may hold only files and folders.',
                        path=info.filename,
                    )
                budget.count(rel)
                if not _wanted(rel):
                    continue
                if info.file_size > limits.max_file_bytes:
                    files[rel] = None
                    continue
                with archive.open(info) as member:
                    _keep(files, spool, rel, budget.read(member, rel, info.file_size))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as exc:
        raise LabError(f"Refused: the zip archive is damaged or cut short and cannot be read: {exc}.") from None
    return TaxonomyRead(_strip_wrapper(files), limits)


def _strip_wrapper(files: dict) -> dict:
    """Archives of a repository usually wrap it in one folder (`taxonomy-main/`); look through it."""
    tops = {path.split("/", 1)[0] for path in files}
    if len(tops) == 1 and all("/" in p for p in files):
        top = next(iter(tops))
        if top not in KINDS:
            return {path.split("/", 1)[1]: data for path, data in files.items()}
    return files


def _place_problem(path: str, folder: str) -> Problem | None:
    if path.split("/", 1)[0] not in KINDS:
        return Problem(
            path,
            f"The leaf is outside the taxonomy roots ({', '.join(KINDS)}); "
            "InstructLab does not read it. Move it under one of them.",
        )
    if len(folder) > LEAF_PATH_MAX:
        return Problem(
            path, f"The folder path is {len(folder):,} characters long; LabWeb stores at most {LEAF_PATH_MAX:,}."
        )
    reason = unstorable_reason(folder)
    if reason:
        return Problem(path, f"The folder path {reason}.")
    return None


def _stored_file_problem(rel: str, name: str, text: str, folder: str) -> Problem | None:
    if len(name) > DOCUMENT_NAME_MAX:
        return Problem(
            rel,
            f"The file name is {len(name)} characters long; LabWeb stores at most {DOCUMENT_NAME_MAX}, "
            f"so its leaf {folder} is not imported.",
        )
    reason = unstorable_reason(name) or unstorable_reason(text)
    if reason:
        line = text[: UNSTORABLE.search(text).start()].count("\n") + 1 if not unstorable_reason(name) else None
        return Problem(rel, f"The file {reason}, so its leaf {folder} is not imported.", line=line)
    return None


def write_tar(files: Iterable[tuple[str, bytes]], stream) -> None:
    """A gzip-compressed tar of `files` ((relative path, content) pairs, taken one at a time as they are written),
    as `ilab` and git expect them."""
    with tarfile.open(fileobj=stream, mode="w:gz") as archive:
        for path, content in files:
            info = tarfile.TarInfo(_clean(path))
            info.size = len(content)
            info.mode = 0o644
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(content))


def write_directory(files: Iterable[tuple[str, bytes]], root: str | os.PathLike) -> None:
    root = Path(root)
    for path, content in files:
        target = root / _clean(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
