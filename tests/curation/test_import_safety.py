"""Unsafe sources are refused whole, with a message naming the offending member, and change nothing."""

import io
import os
import tarfile
import zipfile

import pytest
from django.test import override_settings

from curation.models import Leaf, TaxonomyImport
from curation.services import ImportSource, taxonomy_import
from curation.taxonomy.source import Limits, read_archive
from tests.support.qna import POEMS


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _import(stream, name, user, limits=Limits()):
    with override_settings(
        LABWEB_IMPORT_MAX_FILE_BYTES=limits.max_file_bytes,
        LABWEB_IMPORT_MAX_TOTAL_BYTES=limits.max_total_bytes,
        LABWEB_IMPORT_MAX_FILES=limits.max_files,
    ):
        return taxonomy_import(source=ImportSource.upload(stream, name), user=user)


def _refused(record, *words):
    assert record.status == TaxonomyImport.Status.REFUSED
    for word in words:
        assert word in record.message
    assert Leaf.objects.count() == 0


def test_import_rejects_path_traversal_in_tar(curator):
    archive = _tar([("compositional_skills/a/qna.yaml", POEMS), ("../../etc/evil/qna.yaml", POEMS)])
    _refused(_import(archive, "t.tar.gz", curator), "../../etc/evil/qna.yaml", "path traversal")


def test_import_rejects_absolute_member(curator):
    _refused(_import(_tar([("/etc/qna.yaml", POEMS)]), "t.tar.gz", curator), "absolute path")


def test_import_rejects_symlink_member(curator):
    link = tarfile.TarInfo("compositional_skills/a/qna.yaml")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    _refused(_import(_tar([link]), "t.tar.gz", curator), "is a link")


def test_import_rejects_hard_link_member(curator):
    link = tarfile.TarInfo("compositional_skills/b/qna.yaml")
    link.type = tarfile.LNKTYPE
    link.linkname = "compositional_skills/a/qna.yaml"
    _refused(_import(_tar([("compositional_skills/a/qna.yaml", POEMS), link]), "t.tar.gz", curator), "is a link")


def test_import_rejects_zip_symlink_and_traversal(curator):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("compositional_skills/a/qna.yaml")
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    buffer.seek(0)
    _refused(_import(buffer, "t.zip", curator), "is a link")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("..\\..\\qna.yaml", POEMS)
    buffer.seek(0)
    _refused(_import(buffer, "t.zip", curator), "path traversal")


def test_import_rejects_gzip_bomb(curator):
    # 64 MiB of zeros compress to ~64 KiB: far more unpacked than the limit allows.
    zeros = b"\0" * (64 * 1024 * 1024)
    members = [(f"knowledge/x/doc{i}.md", zeros[: 8 * 1024 * 1024]) for i in range(8)]
    record = _import(
        _tar(members), "bomb.tar.gz", curator, Limits(max_file_bytes=16 * 1024 * 1024, max_total_bytes=32 * 1024 * 1024)
    )
    _refused(record, "decompression bomb")


def test_import_rejects_zip_bomb_from_declared_sizes(curator):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(4):
            archive.writestr(f"knowledge/x/d{i}.md", b"\0" * (4 * 1024 * 1024))
    buffer.seek(0)
    _refused(_import(buffer, "bomb.zip", curator, Limits(max_total_bytes=8 * 1024 * 1024)), "decompression bomb")


def test_import_rejects_too_many_files(curator):
    members = [(f"compositional_skills/s{i}/qna.yaml", POEMS) for i in range(6)]
    _refused(_import(_tar(members), "many.tar.gz", curator, Limits(max_files=5)), "more than 5 files")


def test_huge_file_is_rejected_alone_and_the_rest_imports(curator):
    members = [("compositional_skills/ok/qna.yaml", POEMS), ("compositional_skills/huge/qna.yaml", POEMS + b"#" * 4096)]
    record = _import(_tar(members), "t.tar.gz", curator, Limits(max_file_bytes=2048))
    assert record.status == TaxonomyImport.Status.SUCCEEDED
    assert record.created == 1 and record.rejected == 1
    assert record.problems[0]["path"] == "compositional_skills/huge/qna.yaml"
    assert "larger than the 2 KiB limit" in record.problems[0]["message"]
    assert list(Leaf.objects.values_list("path", flat=True)) == ["compositional_skills/ok"]


def test_import_rejects_symlink_outside_root(curator, tmp_path):
    root = tmp_path / "taxonomy"
    (root / "compositional_skills" / "ok").mkdir(parents=True)
    (root / "compositional_skills" / "ok" / "qna.yaml").write_bytes(POEMS)
    secret = tmp_path / "secret.md"
    secret.write_text("password")
    (root / "compositional_skills" / "ok" / "leak.md").symlink_to(secret)
    record = taxonomy_import(source=ImportSource.directory(root), user=curator, from_shell=True)
    _refused(record, "compositional_skills/ok/leak.md", "outside the taxonomy root")


def test_symlink_inside_root_is_read(curator, tmp_path):
    root = tmp_path / "taxonomy"
    leaf = root / "compositional_skills" / "ok"
    leaf.mkdir(parents=True)
    (root / "shared.yaml").write_bytes(POEMS)
    os.symlink(root / "shared.yaml", leaf / "qna.yaml")
    record = taxonomy_import(source=ImportSource.directory(root), user=curator, from_shell=True)
    assert record.created == 1


def test_archive_wrapped_in_one_folder_is_looked_through(curator):
    record = _import(_tar([("taxonomy-main/compositional_skills/a/qna.yaml", POEMS)]), "t.tar.gz", curator)
    assert record.created == 1
    assert Leaf.objects.get().path == "compositional_skills/a"


def test_not_an_archive_is_a_clear_refusal(curator):
    record = _import(io.BytesIO(b"this is not gzip"), "t.tar.gz", curator)
    _refused(record, "is not a gzip/tar/zip archive")
    with pytest.raises(Exception, match="not a gzip/tar/zip archive"):
        read_archive(io.BytesIO(b""), "t.rar")
