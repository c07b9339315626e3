"""The export is made leaf by leaf: the files are read from the database a chunk of leaves at a time and written
into the archive as they come, and the HTTP answer streams the archive from a spooled temporary file (memory up to
a bound, disk past it) that was written whole before the first byte, so an export that fails is an error answer.
The archive is byte for byte what the export wrote when it held every file, and then the archive, in memory."""

import io
import tarfile
import tempfile
import types

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from curation.models import Document, Leaf
from curation.qna_map import leaf_qna
from curation.services import document_add, leaf_create, leaf_update
from curation.taxonomy.source import write_tar

pytestmark = pytest.mark.django_db
FIXED = types.SimpleNamespace(time=lambda: 1_700_000_000.0)


@pytest.fixture
def pinned_time(monkeypatch):
    """Every file's mtime and the gzip header's are the clock's: one clock for both archives compared."""
    import gzip

    import curation.taxonomy.source

    monkeypatch.setattr(curation.taxonomy.source, "time", FIXED)
    monkeypatch.setattr(gzip, "time", FIXED)


@pytest.fixture
def taxonomy(imported, curator):
    """The corpus, with what else an export writes: an edited leaf, documents, an attribution, an invalid leaf."""
    knowledge = Leaf.objects.filter(kind="knowledge", is_valid=True).order_by("path").first()
    document_add(leaf=knowledge, user=curator, expected_revision=None, name="notes.md", content="# Notes\n\nÆgypt.\n")
    document_add(leaf=knowledge, user=curator, expected_revision=None, name="a-source.md", content="# A source\n")
    knowledge.refresh_from_db()
    leaf_update(leaf=knowledge, user=curator, expected_revision=knowledge.revision, attribution="Source: notes\n")
    skills = Leaf.objects.filter(kind="compositional_skills", is_valid=True).order_by("path").first()
    leaf_update(leaf=skills, user=curator, expected_revision=skills.revision, task_description="Edited in LabWeb.")
    leaf_create(path="compositional_skills/drafts/unfinished", user=curator, task_description="Not ready yet.")
    return knowledge


def archive_held_in_memory() -> bytes:
    """The export as it was made before it streamed (selectors.export_files then): every file in a list, every
    leaf with its seeds and documents read at once, then the archive written into memory."""
    from curation.taxonomy import export_qna

    files = []
    for leaf in Leaf.objects.all().order_by("path").prefetch_related("seeds", "documents"):
        if not leaf.is_valid:
            continue
        text = export_qna(leaf_qna(leaf, leaf.seeds.all()), leaf.imported_qna, leaf.qna_path)
        files.append((leaf.qna_path, text.encode("utf-8")))
        if leaf.attribution:
            files.append((f"{leaf.path}/attribution.txt", leaf.attribution.encode("utf-8")))
        for document in leaf.documents.all():
            files.append((f"{leaf.path}/{document.name}", document.content.encode("utf-8")))
    buffer = io.BytesIO()
    write_tar(files, buffer)
    return buffer.getvalue()


def test_the_streamed_export_is_byte_for_byte_the_archive_made_in_memory(taxonomy, api, pinned_time, tmp_path):
    expected = archive_held_in_memory()
    response = api.get("/api/export/")
    assert response.status_code == 200 and response.streaming
    assert response.getvalue() == expected
    assert response["Content-Length"] == str(len(expected))
    assert response["X-LabWeb-Skipped-Invalid"] == "1"
    with tarfile.open(fileobj=io.BytesIO(expected)) as tar:
        names = tar.getnames()
    assert f"{taxonomy.path}/notes.md" in names and f"{taxonomy.path}/attribution.txt" in names

    out = tmp_path / "taxonomy.tar.gz"
    call_command("taxonomy_export", str(out), stdout=io.StringIO())
    assert out.read_bytes() == expected


def test_the_export_reads_the_leaves_a_chunk_at_a_time(taxonomy, api, monkeypatch):
    import curation.selectors

    monkeypatch.setattr(curation.selectors, "EXPORT_CHUNK", 50)
    valid = Leaf.objects.filter(is_valid=True).count()
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/export/").status_code == 200
    seeds = [q["sql"] for q in queries.captured_queries if 'FROM "curation_seedexample"' in q["sql"]]
    assert len(seeds) == -(-valid // 50)  # one read of seeds per chunk of leaves, never one of them all
    documents = [q["sql"] for q in queries.captured_queries if 'FROM "curation_document"' in q["sql"]]
    contents = [sql for sql in documents if '"curation_document"."content"' in sql]
    assert len(contents) == 1  # the chunk's documents' text in one read, apart from the leaves'

    # Documents larger together than a batch are read a batch at a time.
    monkeypatch.setattr(curation.selectors, "DOCUMENT_BATCH_BYTES", 1)
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/export/").status_code == 200
    contents = [q for q in queries.captured_queries if '"curation_document"."content"' in q["sql"]]
    assert len(contents) == Document.objects.count() > 1


def test_the_export_streams_from_disk_past_the_bound_and_fails_before_its_first_byte(
    taxonomy, api, curator, monkeypatch
):
    import curation.views.exports

    spools = []

    class Spool(tempfile.SpooledTemporaryFile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            spools.append(self)

    monkeypatch.setattr(curation.views.exports, "SPOOL_BYTES", 4096)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", Spool)
    response = api.get("/api/export/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="taxonomy.tar.gz"'
    (spool,) = spools
    assert spool._rolled  # past 4 KiB the archive went to a file on disk, not into the process
    chunks = list(response.streaming_content)
    assert len(chunks) > 1 and sum(map(len, chunks)) == int(response["Content-Length"])
    response.close()
    assert spool.closed  # and the file is gone with the response

    import curation.taxonomy

    real = curation.taxonomy.export_qna
    written = []

    def breaks_at_the_tenth_leaf(*args):
        written.append(args)
        if len(written) == 10:
            raise RuntimeError("the database went away")
        return real(*args)

    monkeypatch.setattr(curation.taxonomy, "export_qna", breaks_at_the_tenth_leaf)
    failed = APIClient(raise_request_exception=False)
    failed.force_authenticate(curator)
    response = failed.get("/api/export/")
    assert response.status_code == 500 and not response.streaming
    assert "Content-Disposition" not in response
