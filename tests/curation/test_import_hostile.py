"""Hostile uploads (issue #12): each is a clear refusal naming file, line and field, and changes nothing.

Every case goes through the REST API with prune on (the way a cut-off or empty archive used to delete leaves)
and the cases about files' content also through the import command; the leaf count is the same before and
after, and the official parser's verdict on the same file stands beside LabWeb's. Inputs are built in the
test and stay small: a "1 GiB member" is a tar header that declares it, or a sparse file.
"""

import bz2
import contextlib
import gzip
import io
import logging
import lzma
import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from instructlab.schema.taxonomy import TaxonomyParser, TaxonomyReadingException

from curation.models import Leaf, TaxonomyImport
from curation.taxonomy import read_qna
from curation.taxonomy.storage import CREATED_BY_MAX, DOMAIN_MAX, LEAF_PATH_MAX
from tests.curation.jobs import run_here
from tests.support.qna import POEMS

BASE = [(f"compositional_skills/base/leaf{i}/qna.yaml", POEMS) for i in range(5)]
TARGET = "compositional_skills/hostile/qna.yaml"


def _tar_bytes(files: list[tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _members(files: list[tuple[str, bytes]]) -> bytes:
    """Tar members without the end-of-archive marker."""
    out = b""
    for name, data in files:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += info.tobuf() + data + b"\0" * (-len(data) % 512)
    return out


def _post(api, data: bytes, name: str = "taxonomy.tar.gz", prune: bool = True):
    """The import job at its end (run here), or the response when the upload was refused at once (400)."""
    upload = SimpleUploadedFile(name, data, content_type="application/octet-stream")
    response = api.post("/api/imports/", {"archive": upload, "prune": "true" if prune else "false"}, format="multipart")
    return response if response.status_code == 400 else run_here(api, response)


@pytest.fixture
def seeded(api):
    response = _post(api, _tar_bytes(BASE), prune=False)
    assert response["status"] == "succeeded", response
    assert Leaf.objects.count() == 5
    return api


def _refused(response, *words) -> dict:
    """Refused at once (400 with the error shape), or by the job: the refusal recorded, its first problem named."""
    if isinstance(response, dict):
        assert response["status"] == "failed" and response["import_record"]["status"] == "refused", response
        error = response["import_record"]["problems"][0]
        assert response["error"] == error["message"]
    else:
        assert response.status_code == 400, response.content[:300]
        error = response.json()["error"]
    for word in words:
        assert word in error["message"], error
    assert Leaf.objects.count() == 5
    return error


@pytest.fixture(scope="module")
def official():
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    parser = TaxonomyParser(schema_version=0, message_format="STANDARD")
    parser.yq_available = False

    def verdict(raw: bytes, tmp: Path, rel: str = TARGET) -> bool:
        file = tmp / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(raw)
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return parser.parse(file).errors == 0
        except TaxonomyReadingException:
            return False
        finally:
            logging.disable(logging.NOTSET)

    return verdict


# --- archives that are not whole -------------------------------------------------------------------------


def _command_refuses(tmp_path, data: bytes, name: str, words: str) -> None:
    """The import command, with --prune, on the same bytes: refused with the same words, nothing changed."""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(CommandError, match=words):
        call_command("taxonomy_import", str(tmp_path / name), "--prune")
    assert Leaf.objects.count() == 5


def test_gzip_of_zeros_is_refused_and_prunes_nothing(seeded, tmp_path):
    zeros = gzip.compress(b"\0" * 1024 * 1024)
    _refused(_post(seeded, zeros), "holds no files")
    _command_refuses(tmp_path, zeros, "zeros.tar.gz", "holds no files")


def test_tar_cut_at_a_member_boundary_is_refused_and_prunes_nothing(seeded, tmp_path):
    cut = _members(BASE[:2])
    _refused(_post(seeded, cut, "taxonomy.tar"), "cut short", BASE[1][0], "end-of-archive marker")
    _refused(_post(seeded, gzip.compress(cut)), "cut short")
    _command_refuses(tmp_path, cut, "cut.tar", "cut short")
    _command_refuses(tmp_path, gzip.compress(cut), "cut.tar.gz", "cut short")


def test_gzip_cut_short_is_refused(seeded):
    whole = _tar_bytes([*BASE, (TARGET, POEMS)])
    _refused(_post(seeded, whole[:-8]), "damaged or cut short")


@pytest.mark.parametrize("compress, suffix", [(bz2.compress, ".tar.bz2"), (lzma.compress, ".tar.xz")])
def test_bzip2_and_xz_archives_import_and_cut_short_are_refused(seeded, tmp_path, compress, suffix):
    data = compress(_tar_bytes([*BASE, (TARGET, POEMS)], mode="w"))
    _refused(_post(seeded, data[:-10], f"taxonomy{suffix}"), "damaged or cut short")
    (tmp_path / f"cut{suffix}").write_bytes(data[:-10])
    with pytest.raises(CommandError, match="damaged or cut short"):
        call_command("taxonomy_import", str(tmp_path / f"cut{suffix}"), "--prune")
    assert Leaf.objects.count() == 5
    response = _post(seeded, data, f"taxonomy{suffix}")
    assert response["status"] == "succeeded" and response["import_record"]["created"] == 1, response
    (tmp_path / f"whole{suffix}").write_bytes(data)
    call_command("taxonomy_import", str(tmp_path / f"whole{suffix}"), "--prune")
    assert Leaf.objects.count() == 6 and TaxonomyImport.objects.first().unchanged == 6


def test_a_zip_that_holds_no_files_is_refused(seeded):
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    _refused(_post(seeded, buffer.getvalue(), "taxonomy.zip", prune=False), "holds no files")


def test_a_non_archive_is_named_as_such(seeded):
    error = _refused(_post(seeded, b"just some text, not an archive\n" * 40), "not a gzip/tar/zip archive")
    assert "checksum" not in error["message"]


def test_a_leaf_whose_qna_yaml_is_over_the_limit_keeps_its_content_on_a_prune(seeded):
    grown = BASE[4][1] + b"# padding\n" * (2 * 1024 * 1024 // 10)
    response = _post(seeded, _tar_bytes([*BASE[:4], (BASE[4][0], grown)]))
    assert response["status"] == "succeeded", response
    body = response["import_record"]
    assert (body["removed"], body["rejected"]) == (0, 1)
    assert body["problems"][0]["path"] == BASE[4][0] and "larger than" in body["problems"][0]["message"]
    assert Leaf.objects.count() == 5


def test_a_member_declared_at_1_gib_is_refused_at_its_header(seeded):
    header = tarfile.TarInfo("compositional_skills/big/blob.bin")
    header.size = 1024**3
    # The header alone: the import must refuse before it would read (or skip) a byte of the member.
    data = gzip.compress(_members(BASE) + header.tobuf())
    _refused(_post(seeded, data), "more than 256 MiB", "blob.bin")


def test_the_import_command_refuses_a_sparse_1_gib_member_without_reading_it(curator, tmp_path):
    archive = tmp_path / "big.tar"
    header = tarfile.TarInfo("compositional_skills/big/blob.bin")
    header.size = 1024**3
    with open(archive, "wb") as stream:
        stream.write(header.tobuf())
        stream.truncate(512 + 1024**3 + 1024)  # sparse: nothing is written to the disk
    before = Leaf.objects.count()
    with pytest.raises(CommandError, match="more than 256 MiB"):
        call_command("taxonomy_import", str(archive), "--prune")
    assert Leaf.objects.count() == before


# --- files whose content LabWeb cannot take -------------------------------------------------------------


def _deep(levels: int) -> bytes:
    return b"version: 3\ntask_description: deep\nnested: " + b"[" * levels + b"]" * levels + b"\n"


@pytest.mark.parametrize("levels", [10_000, 100_000])
def test_deeply_nested_yaml_is_refused_before_parsing(seeded, official, tmp_path, levels):
    raw = _deep(levels)
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["status"] == "succeeded", response
    problem = response["import_record"]["problems"][0]
    assert (problem["path"], problem["line"]) == (TARGET, 3)
    assert "nested more than 100 levels" in problem["message"]
    assert Leaf.objects.count() == 5
    if levels == 10_000:  # the official parser (pure-Python PyYAML) fails on it too, with a RecursionError
        assert official(raw, tmp_path) is False


def test_billion_laughs_is_refused(seeded):
    lines = ["version: 3", "task_description: laughs", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 8) + "]" for i in range(1, 10)]
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, ("\n".join(lines) + "\n").encode())]))
    assert response["status"] == "succeeded", response
    problem = response["import_record"]["problems"][0]
    assert problem["path"] == TARGET and problem["line"] and "billion laughs" in problem["message"]
    assert Leaf.objects.count() == 5


def _poems_with(line: str) -> bytes:
    return POEMS.replace(b"created_by: someone\n", line.encode() + b"\n")


@pytest.mark.parametrize(
    "line, field, words",
    [
        ('created_by: "some\\0one"', "created_by", "NUL"),
        ("created_by: " + "x" * (CREATED_BY_MAX + 1), "created_by", f"at most {CREATED_BY_MAX}"),
        ('created_by: "\\ud800"', "created_by", "surrogate"),
    ],
)
def test_values_the_database_cannot_store_are_named(seeded, official, tmp_path, line, field, words):
    raw = _poems_with(line)
    assert official(raw, tmp_path) is True  # the official parser accepts them; LabWeb says why it cannot
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["status"] == "succeeded", response
    problem = next(p for p in response["import_record"]["problems"] if p["field"] == field)
    assert problem["path"] == TARGET and problem["line"] == 3 and words in problem["message"]
    assert Leaf.objects.count() == 5


def test_a_knowledge_domain_longer_than_its_column_is_named(seeded, official, tmp_path, corpus):
    for file in sorted(corpus.glob("knowledge/**/qna.yaml")):
        raw, rel = file.read_bytes(), str(file.relative_to(corpus))
        if b"\ndomain: " in raw and official(raw, tmp_path, rel):
            break
    long = re.sub(rb"\ndomain: [^\n]*", b"\ndomain: " + b"d" * (DOMAIN_MAX + 1), raw, count=1)
    assert official(long, tmp_path, rel) is True
    problems = read_qna(long, rel).errors
    assert [(p.field, f"at most {DOMAIN_MAX}" in p.message) for p in problems] == [("domain", True)]
    assert problems[0].line == raw[: raw.index(b"\ndomain: ") + 1].count(b"\n") + 1
    # And through the API: the leaf is not imported, the others are untouched.
    response = _post(seeded, _tar_bytes([*BASE, (rel, long)]))
    problem = next(p for p in response["import_record"]["problems"] if p["field"] == "domain")
    assert (problem["path"], problem["line"]) == (rel, problems[0].line)
    assert Leaf.objects.count() == 5


def test_a_leaf_path_longer_than_its_column_is_named(seeded):
    folder = "compositional_skills/" + "p" * LEAF_PATH_MAX
    response = _post(seeded, _tar_bytes([*BASE, (f"{folder}/qna.yaml", POEMS)]))
    assert response["status"] == "succeeded", response
    assert f"at most {LEAF_PATH_MAX:,}" in response["import_record"]["problems"][0]["message"]
    assert Leaf.objects.count() == 5


def test_a_document_with_a_nul_is_named_with_its_line(seeded):
    leaf = [(TARGET, POEMS), ("compositional_skills/hostile/notes.md", b"# Notes\n\nbad \0 byte\n")]
    response = _post(seeded, _tar_bytes([*BASE, *leaf]))
    problem = response["import_record"]["problems"][0]
    assert (problem["path"], problem["line"]) == ("compositional_skills/hostile/notes.md", 3)
    assert Leaf.objects.count() == 5


# --- agreement with the official parser ----------------------------------------------------------------


def test_crlf_files_import_as_the_official_parser_reads_them(api, official, tmp_path, corpus):
    files = sorted(corpus.glob("compositional_skills/**/qna.yaml"))
    crlf = []
    for file in files:
        raw = file.read_bytes().replace(b"\n", b"\r\n")
        if official(file.read_bytes(), tmp_path):
            crlf.append((str(file.relative_to(corpus)), raw))
        if len(crlf) == 12:
            break
    assert all(official(raw, tmp_path) for _, raw in crlf)
    response = _post(api, _tar_bytes(crlf), prune=False)
    assert response["status"] == "succeeded" and response["import_record"]["rejected"] == 0, response["import_record"][
        "problems"
    ][:3]
    assert Leaf.objects.count() == 12


def test_yamllint_disable_comments_are_honoured(seeded, official, tmp_path):
    spaced = POEMS.replace(b"q1\n", b"q1   \n")
    raw = b"# yamllint disable rule:trailing-spaces\n" + spaced
    assert (official(raw, tmp_path), official(spaced, tmp_path)) == (True, False)
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert (response["import_record"]["created"], response["import_record"]["rejected"]) == (1, 0), response
    assert Leaf.objects.count() == 6
    response = _post(seeded, _tar_bytes([*BASE, ("compositional_skills/spaced/qna.yaml", spaced)]), prune=False)
    problem = response["import_record"]["problems"][0]
    assert (problem["line"], "trailing-spaces" in problem["message"]) == (5, True)
    assert Leaf.objects.count() == 6


def test_each_missing_key_is_reported_once(seeded):
    raw = b"version: 3\nseed_examples:\n" + b"".join(b"  - question: q%d\n    answer: a\n" % i for i in range(5))
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    messages = [p["message"] for p in response["import_record"]["problems"]]
    assert messages.count('"task_description" is required.') == 1
    assert messages.count('"created_by" is required.') == 1


def test_a_file_outside_the_roots_gets_its_content_checked_too(seeded):
    raw = b"version: 3\ntask_description: x\n"
    response = _post(seeded, _tar_bytes([*BASE, ("elsewhere/leaf/qna.yaml", raw)]))
    messages = [p["message"] for p in response["import_record"]["problems"] if p["path"] == "elsewhere/leaf/qna.yaml"]
    assert any("outside the taxonomy roots" in m for m in messages)
    assert '"created_by" is required.' in messages


def test_an_unclosed_quote_is_reported_where_it_opens(seeded):
    raw = b'version: 3\ntask_description: "never closed\ncreated_by: me\n'
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["import_record"]["problems"][0]["line"] == 2


def test_a_10000_seed_leaf_imports(seeded):
    seeds = b"".join(b"  - question: question %d?\n    answer: answer %d.\n" % (i, i) for i in range(10_000))
    raw = b"version: 3\ntask_description: many\ncreated_by: me\nseed_examples:\n" + seeds
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["status"] == "succeeded" and response["import_record"]["created"] == 1, response["import_record"][
        "problems"
    ][:2]
    assert Leaf.objects.get(path="compositional_skills/hostile").seeds.count() == 10_000


def test_the_import_command_names_file_line_and_field(curator, tmp_path, capsys):
    root = tmp_path / "taxonomy"
    for name, raw in [*BASE, (TARGET, _poems_with('created_by: "some\\0one"'))]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(raw)
    call_command("taxonomy_import", str(root), "--prune")
    out = capsys.readouterr().out
    assert f"{TARGET}:3 [created_by]" in out and "NUL" in out
    assert Leaf.objects.count() == 5
    assert TaxonomyImport.objects.get().rejected == 1


# --- found by the audit of 2026-12-02: shapes the cases above did not reach ------------------------------


def test_deep_nesting_after_what_libyaml_refuses_is_refused_before_parsing(seeded, tmp_path):
    # libyaml refuses a surrogate escape, so the file is parsed with the pure loader, which recurses per level.
    raw = _poems_with('created_by: "\\ud800"') + b"nested: " + b"[" * 100_000 + b"]" * 100_000 + b"\n"
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["status"] == "succeeded", response
    problem = response["import_record"]["problems"][0]
    assert (problem["path"], problem["line"]) == (TARGET, 15) and "nested more than 100 levels" in problem["message"]
    assert Leaf.objects.count() == 5


def test_a_recursive_alias_is_refused(seeded, official, tmp_path):
    # The data would hold itself: every walk over it (validation, hashing, the checks of what can be stored) loops.
    raw = POEMS + b"loop: &loop [1, *loop]\n"
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["status"] == "succeeded", response
    problem = response["import_record"]["problems"][0]
    assert (problem["path"], problem["line"]) == (TARGET, 15) and "recursive alias" in problem["message"]
    assert Leaf.objects.count() == 5
    assert official(raw, tmp_path) is False


def test_aliases_of_a_long_text_are_refused(seeded, tmp_path):
    # Few nodes, many characters: 25 answers naming one 100,000-character text. 20,000 of them fit in a 2 MiB file,
    # 2 GB to hash and write once the data is built.
    seeds = b"".join(b"  - question: q%d\n    answer: *long\n" % index for index in range(25))
    raw = b"version: 3\ntask_description: &long " + b"x" * 100_000 + b"\ncreated_by: me\nseed_examples:\n" + seeds
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["status"] == "succeeded", response
    problem = response["import_record"]["problems"][0]
    assert (problem["path"], problem["line"]) == (TARGET, 5 + 2 * 20 + 1)
    assert "2,000,000 characters" in problem["message"] and "billion laughs" in problem["message"]
    assert Leaf.objects.count() == 5
    for name, data in [*BASE, (TARGET, raw)]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    call_command("taxonomy_import", str(tmp_path), "--prune")
    assert Leaf.objects.count() == 5 and TaxonomyImport.objects.first().rejected == 1


@pytest.mark.parametrize("version", [b".inf", b"true", b"1.0e+400"])
def test_a_version_that_names_no_schema_is_refused_as_the_official_parser_refuses_it(
    seeded, official, tmp_path, version
):
    raw = POEMS.replace(b"version: 3", b"version: " + version)
    assert official(raw, tmp_path) is False
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    assert response["status"] == "succeeded", response
    problem = response["import_record"]["problems"][0]
    assert (problem["path"], problem["line"], problem["field"]) == (TARGET, 1, "version")
    assert "Unknown schema version" in problem["message"]
    assert Leaf.objects.count() == 5


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_a_tar_header_extension_past_its_limit_is_refused_before_it_is_read(seeded, tmp_path, kind):
    # A long name or pax record is read whole into memory before its member: 2 MiB here, a GiB in a 1 MiB upload.
    header = tarfile.TarInfo("././@LongLink" if kind == tarfile.GNUTYPE_LONGNAME else "././@PaxHeader")
    header.type = kind
    header.size = 2 * 1024 * 1024
    if kind == tarfile.GNUTYPE_LONGNAME:
        payload = b"7" * header.size
    else:  # one pax record, "LENGTH comment=VALUE\n", LENGTH counting the whole record
        payload = b"%d comment=" % header.size
        payload += b"7" * (header.size - len(payload) - 1) + b"\n"
    whole = _members(BASE) + header.tobuf(tarfile.GNU_FORMAT) + payload + _members(BASE) + b"\0" * 1024
    data = gzip.compress(whole)
    _refused(_post(seeded, data), "tar header extension", "2,097,152 bytes")
    _command_refuses(tmp_path, data, "long.tar.gz", "tar header extension")


def test_a_zip_listing_more_entries_than_the_file_limit_is_refused_before_its_directory_is_read(seeded, settings):
    settings.LABWEB_IMPORT_MAX_FILES = 5
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(11):
            archive.writestr(f"compositional_skills/z/{index}.md", b"")
    _refused(_post(seeded, buffer.getvalue(), "taxonomy.zip"), "lists 11 entries", "at most 5 files")


def test_a_file_with_a_problem_on_every_line_lists_its_first_100(seeded, official, tmp_path):
    # 2 MiB of such lines would be 400,000 problems for one file, 50 million in an upload.
    raw = b"version: 3\ntask_description: x\ncreated_by: me\nlines:\n" + b"- a \n" * 5_000
    assert official(raw, tmp_path) is False
    response = _post(seeded, _tar_bytes([*BASE, (TARGET, raw)]))
    problems = [p for p in response["import_record"]["problems"] if p["path"] == TARGET]
    assert len(problems) == 101 and [p["line"] for p in problems[:3]] == [5, 6, 7], problems[:3]
    assert problems[-1]["message"] == "More problems follow in this file; LabWeb lists the first 100."
    assert response["import_record"]["rejected"] == 1 and Leaf.objects.count() == 5


def test_an_import_lists_its_first_problems_and_counts_every_rejected_file(seeded, monkeypatch):
    from curation.taxonomy import source

    monkeypatch.setattr(source, "MAX_SOURCE_PROBLEMS", 3)
    broken = [(f"compositional_skills/broken/b{index}/qna.yaml", b"version: 3\n") for index in range(4)]
    response = _post(seeded, _tar_bytes([*BASE, *broken]))
    record = response["import_record"]
    assert (record["rejected"], record["unchanged"], len(record["problems"])) == (4, 5, 4), record
    assert record["problems"][-1]["message"] == "More problems follow; LabWeb lists the first 3."
    assert record["problems"][-1]["path"] == broken[1][0]
    assert Leaf.objects.count() == 5


def test_a_server_path_or_revision_longer_than_labweb_stores_is_refused_not_cut(staff_curator, tmp_path):
    from rest_framework.test import APIClient

    from curation.models import ImportJob

    deep = tmp_path.joinpath(*(letter * 250 for letter in "abcde"))
    deep.mkdir(parents=True)
    client = APIClient()
    client.force_authenticate(staff_curator)
    response = client.post("/api/imports/", {"directory": str(deep)}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert "LabWeb stores at most 1,000" in response.json()["error"]["message"]
    response = client.post("/api/imports/", {"git": str(tmp_path), "ref": "r" * 201}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["field"] == "ref" and "at most 200" in response.json()["error"]["message"]
    # A folder name longer than the file system takes (255 bytes) is said so, not a server error.
    response = client.post("/api/imports/", {"directory": str(tmp_path / ("y" * 300))}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert "File name too long" in response.json()["error"]["message"]
    assert not ImportJob.objects.exists() and not Leaf.objects.exists()
