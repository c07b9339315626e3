"""The real corpus through the command a user runs: import, export, import again; and the demo taxonomy."""

import io
import json
import tarfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from curation.models import Leaf, LeafRevision, SeedExample, TaxonomyImport
from curation.selectors import leaf_qna
from curation.taxonomy import read_qna

EXPECTED = json.loads(Path(__file__).with_name("corpus_rejections.json").read_text())
OUTSIDE_ROOTS = "extraction/inference/quantitative/chemical/qna.yaml"


def _dump(leaves=None) -> dict:
    """Everything a leaf holds, by path, for comparing two imports."""
    leaves = leaves if leaves is not None else Leaf.objects.prefetch_related("seeds", "documents")
    return {
        leaf.path: (
            leaf.kind,
            leaf_qna(leaf, leaf.seeds.all()),
            leaf.attribution,
            sorted((d.name, d.sha256) for d in leaf.documents.all()),
        )
        for leaf in leaves
    }


@pytest.mark.django_db
def test_import_command_takes_every_valid_leaf_and_reports_every_invalid_file(corpus, curator, capsys):
    call_command("taxonomy_import", str(corpus), "--user", curator.username)
    out = capsys.readouterr().out
    record = TaxonomyImport.objects.get()
    assert (record.created, record.rejected) == (301, 125)
    assert Leaf.objects.count() == 301 and Leaf.objects.filter(is_valid=False).count() == 0
    assert SeedExample.objects.count() > 1500
    assert LeafRevision.objects.filter(action="import").count() == 301
    rejected = {p["path"] for p in record.problems if p["level"] == "error"}
    assert rejected == set(EXPECTED) | {OUTSIDE_ROOTS}
    # Every rejected file is named in the output with its line and field.
    for path, summary in EXPECTED.items():
        line, field, _ = summary.split(":", 2)
        assert f"{path}:{line} [{field}]" in out or f"{path}:{line} " in out, path
    assert "outside the taxonomy roots" in out


@pytest.mark.django_db
def test_import_export_import_gives_equal_data(corpus, curator, tmp_path):
    call_command("taxonomy_import", str(corpus), "--user", curator.username)
    before = _dump()
    archive = tmp_path / "taxonomy.tar.gz"
    call_command("taxonomy_export", str(archive))
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers()]
        assert len([n for n in names if n.endswith("qna.yaml")]) == 301
        for member in tar.getmembers():
            if member.name.endswith("qna.yaml"):
                assert read_qna(tar.extractfile(member).read(), member.name).valid, member.name

    call_command("taxonomy_import", str(archive), "--user", curator.username)
    again = TaxonomyImport.objects.first()
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 301, 0)

    # Into an empty database: the same data comes back.
    Leaf.objects.all().delete()
    call_command("taxonomy_import", str(archive), "--user", curator.username)
    assert _dump() == before


@pytest.mark.django_db
def test_exported_files_validate_with_instructlab_schema(corpus, curator, tmp_path, monkeypatch):
    import os
    import sys

    from instructlab.schema.taxonomy import TaxonomyParser

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    call_command("taxonomy_import", str(corpus), "--user", curator.username)
    out = tmp_path / "export"
    call_command("taxonomy_export", str(out))
    parser = TaxonomyParser(schema_version=0, message_format="LOGGING")
    parser.yq_available = False
    failures = [str(p) for p in sorted(out.rglob("qna.yaml")) if parser.parse(p).errors]
    assert failures == []
    assert len(list(out.rglob("qna.yaml"))) == 301


@pytest.mark.django_db
def test_diff_lists_leaves_changed_since_the_last_import(corpus, curator, capsys):
    from curation.services import leaf_update

    call_command("taxonomy_import", str(corpus), "--user", curator.username)
    capsys.readouterr()
    call_command("taxonomy_diff")
    assert capsys.readouterr().out.strip() == ""
    leaf = Leaf.objects.order_by("path").first()
    leaf_update(leaf=leaf, user=curator, expected_revision=leaf.revision, task_description="Tell better jokes.")
    call_command("taxonomy_diff")
    assert capsys.readouterr().out.split() == [f"{leaf.path}/qna.yaml"]


@pytest.mark.django_db
def test_refused_import_exits_non_zero_and_changes_nothing(curator, tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../qna.yaml")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"a: 1"[:3]))
    with pytest.raises(CommandError, match="path traversal"):
        call_command("taxonomy_import", str(evil), "--user", curator.username)
    assert Leaf.objects.count() == 0
    assert TaxonomyImport.objects.get().status == "refused"


@pytest.mark.django_db
def test_demo_taxonomy_is_valid_and_the_demo_command_is_idempotent(capsys):
    call_command("labweb_demo", "--skip-model")
    first = capsys.readouterr().out
    assert "password:" in first
    assert Leaf.objects.count() == 4 and Leaf.objects.filter(is_valid=True).count() == 4
    assert Leaf.objects.get(kind="knowledge").documents.count() == 1
    call_command("labweb_demo", "--skip-model")
    second = capsys.readouterr().out
    assert "password:" not in second and "its password is unchanged" in second
    assert Leaf.objects.count() == 4
    assert TaxonomyImport.objects.first().unchanged == 4
