"""What the import decides once for every front door (page, API, command): the label it records, who may name a
server path, when the diff baseline moves, and what a prune may remove."""

import io
import subprocess
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from curation import services
from curation.models import ImportJob, Leaf, LeafRevision, TaxonomyImport, TaxonomySnapshot
from curation.selectors import latest_import_snapshot, taxonomy_diff
from curation.taxonomy.source import write_tar
from tests.curation.jobs import run_here, run_page
from tests.support.qna import POEMS

BROKEN = POEMS.replace(b"created_by: someone\n", b"")  # created_by is required: the file is rejected


def targz(paths: list[str], content: bytes = POEMS, name: str = "t.tar.gz") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    write_tar([(f"{path}/qna.yaml", content) for path in paths], buffer)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/gzip")


def folder(root: Path, paths: list[str]) -> Path:
    for path in paths:
        (root / path).mkdir(parents=True)
        (root / path / "qna.yaml").write_bytes(POEMS)
    return root


def git_repo(root: Path, paths: list[str]) -> Path:
    folder(root, paths)
    base = ["git", "-c", "user.name=LabWeb Test", "-c", "user.email=labweb@example.com", "-c", "commit.gpgsign=false"]
    base += ["-c", "init.defaultBranch=main", "-C", str(root)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "poems"]):
        subprocess.run(base + args, check=True, capture_output=True)
    return root


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def last_label() -> str:
    return TaxonomyImport.objects.first().source


def counts() -> tuple[int, int, int, int]:
    return (
        Leaf.objects.count(),
        LeafRevision.objects.count(),
        TaxonomyImport.objects.count(),
        TaxonomySnapshot.objects.count(),
    )


PAIR = ["compositional_skills/poems/a", "compositional_skills/poems/b"]


# The label recorded


def test_a_server_folder_is_recorded_under_one_label_from_page_api_and_command(staff_curator, tmp_path):
    root = folder(tmp_path / "taxonomy", PAIR)
    body = {"source": "directory", "directory": f" {root}/ "}
    client = client_for(staff_curator)
    run_page(client, client.post(reverse("curation:import"), body))
    labels = [last_label()]
    api = api_for(staff_curator)
    run_here(api, api.post("/api/imports/", {"directory": f"{root}/"}, format="json"))
    labels.append(last_label())
    call_command("taxonomy_import", str(root), stdout=io.StringIO())
    labels.append(last_label())
    assert labels == [str(root.resolve())] * 3


def test_a_git_ref_is_recorded_under_one_label_from_page_api_and_command(staff_curator, tmp_path):
    repo = git_repo(tmp_path / "repo", PAIR)
    client = client_for(staff_curator)
    run_page(client, client.post(reverse("curation:import"), {"source": "git", "repository": str(repo), "ref": "main"}))
    labels = [last_label()]
    api = api_for(staff_curator)
    run_here(api, api.post("/api/imports/", {"git": str(repo), "ref": "main"}, format="json"))
    labels.append(last_label())
    call_command("taxonomy_import", str(repo), "--ref", "main", stdout=io.StringIO())
    labels.append(last_label())
    assert labels == [f"{repo.resolve()}@main"] * 3


def test_an_upload_is_recorded_under_one_label_from_page_and_api(curator):
    client = client_for(curator)
    run_page(client, client.post(reverse("curation:import"), {"source": "archive", "archive": targz(PAIR)}))
    labels = [last_label()]
    api = api_for(curator)
    job = run_here(api, api.post("/api/imports/", {"archive": targz(PAIR)}, format="multipart"))
    labels.append(last_label())
    assert labels == ["upload t.tar.gz"] * 2 and job["source"] == job["import_record"]["source"] == "upload t.tar.gz"


# Server paths are for staff


@pytest.mark.parametrize("kind", ["directory", "git"])
def test_a_curator_without_staff_is_refused_a_server_path_on_the_page_with_the_reason(curator, tmp_path, kind):
    root = git_repo(tmp_path / "repo", PAIR)
    body = {"source": kind, "directory" if kind == "directory" else "repository": str(root)}
    before = counts()
    for extra in ({}, {"dry_run": "on"}, {"prune": "on"}):
        response = client_for(curator).post(reverse("curation:import"), {**body, **extra})
        assert response.status_code == 403
        assert "needs a staff account" in response.content.decode()
        assert counts() == before


@pytest.mark.parametrize("kind", ["directory", "git"])
def test_a_curator_without_staff_is_refused_a_server_path_by_the_api_with_the_reason(curator, tmp_path, kind):
    root = git_repo(tmp_path / "repo", PAIR)
    before = counts()
    for extra in ({}, {"dry_run": True}):
        response = api_for(curator).post("/api/imports/", {kind: str(root), **extra}, format="json")
        assert response.status_code == 403
        assert "needs a staff account" in response.json()["error"]["message"]
        assert counts() == before


# An import that changes nothing keeps the baseline


def test_an_import_whose_every_file_is_rejected_keeps_the_baseline_and_the_page_says_it_failed(curator):
    client = client_for(curator)
    run_page(client, client.post(reverse("curation:import"), {"source": "archive", "archive": targz(PAIR)}))
    baseline = latest_import_snapshot()
    leaf = Leaf.objects.get(path=PAIR[0])
    services.leaf_update(leaf=leaf, user=curator, expected_revision=leaf.revision, task_description="Edited here.")
    assert taxonomy_diff().modified == [PAIR[0]]

    response = run_page(
        client, client.post(reverse("curation:import"), {"source": "archive", "archive": targz([PAIR[1]], BROKEN)})
    )

    record = TaxonomyImport.objects.first()
    assert (record.status, record.rejected, record.snapshot) == (TaxonomyImport.Status.FAILED, 1, None)
    page = response.content.decode()
    assert "succeeded" not in page.lower()
    assert "Failed" in page and "nothing was imported" in page
    assert latest_import_snapshot() == baseline
    assert taxonomy_diff().modified == [PAIR[0]]


def test_an_import_that_changes_no_leaf_keeps_the_baseline(curator):
    services.taxonomy_import(source=services.ImportSource.upload(targz(PAIR), "t.tar.gz"), user=curator)
    baseline = latest_import_snapshot()
    record = services.taxonomy_import(source=services.ImportSource.upload(targz(PAIR), "t.tar.gz"), user=curator)
    assert (record.status, record.unchanged, record.snapshot) == (TaxonomyImport.Status.SUCCEEDED, 2, None)
    assert latest_import_snapshot() == baseline


def test_the_command_fails_when_every_file_is_rejected(tmp_path, db):
    root = tmp_path / "taxonomy" / PAIR[0]
    root.mkdir(parents=True)
    (root / "qna.yaml").write_bytes(BROKEN)
    with pytest.raises(CommandError, match="Every file was rejected"):
        call_command("taxonomy_import", str(tmp_path / "taxonomy"), stdout=io.StringIO())
    assert (Leaf.objects.count(), latest_import_snapshot()) == (0, None)


# Prune: a dry run first, and never every leaf unless asked


@pytest.fixture
def three(curator) -> list[str]:
    paths = [*PAIR, "compositional_skills/poems/c"]
    services.taxonomy_import(source=services.ImportSource.upload(targz(paths), "t.tar.gz"), user=curator)
    return paths


def test_an_api_prune_dry_run_lists_the_leaves_it_would_remove_and_changes_nothing(curator, three):
    before = counts()
    api = api_for(curator)
    response = api.post(
        "/api/imports/", {"archive": targz(PAIR), "prune": "true", "dry_run": "true"}, format="multipart"
    )
    job = run_here(api, response)
    assert (job["status"], job["dry_run"], job["import_record"]) == ("succeeded", True, None)
    body = job["plan"]
    assert body["dry_run"] is True
    assert (body["removed"], body["removed_paths"], body["unchanged"]) == (1, [three[2]], 2)
    assert counts() == before

    job = run_here(api, api.post("/api/imports/", {"archive": targz(PAIR), "prune": "true"}, format="multipart"))
    assert job["import_record"]["removed"] == 1
    assert sorted(Leaf.objects.values_list("path", flat=True)) == PAIR


def test_a_prune_on_the_page_lists_the_leaves_it_would_remove_and_imports_only_when_confirmed(
    staff_curator, three, tmp_path
):
    root = folder(tmp_path / "taxonomy", PAIR)
    client = client_for(staff_curator)
    before = counts()

    response = client.post(reverse("curation:import"), {"source": "directory", "directory": str(root), "prune": "on"})

    response = run_page(client, response)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="import-plan"' in page and "nothing was changed" in page
    assert f"<li><code>{three[2]}</code></li>" in page and "Import and remove 1 leaf" in page
    assert counts() == before

    dry = response.resolver_match.kwargs["pk"]
    response = run_page(client, client.post(reverse("curation:import_confirm", args=[dry])))
    assert response.resolver_match.url_name == "import_detail"
    assert sorted(Leaf.objects.values_list("path", flat=True)) == PAIR


def test_a_dry_run_on_the_page_changes_nothing(curator, three):
    before = counts()
    client = client_for(curator)
    response = client.post(
        reverse("curation:import"),
        {"source": "archive", "archive": targz(["compositional_skills/new"]), "dry_run": "on"},
    )
    response = run_page(client, response)
    assert response.status_code == 200
    assert 'data-count="created">1<' in response.content.decode()
    assert counts() == before


def test_the_command_dry_run_lists_the_leaves_a_prune_would_remove(three, tmp_path):
    root = folder(tmp_path / "taxonomy", PAIR)
    before = counts()
    out = io.StringIO()
    call_command("taxonomy_import", str(root), "--prune", "--dry-run", stdout=out)
    assert f"{three[2]}/qna.yaml" in out.getvalue() and "1 removed" in out.getvalue()
    assert counts() == before


OTHER = ["compositional_skills/elsewhere/x"]


def test_an_api_prune_that_would_remove_every_leaf_is_refused_unless_allowed(curator, three):
    api = api_for(curator)
    job = run_here(api, api.post("/api/imports/", {"archive": targz(OTHER), "prune": "true"}, format="multipart"))
    assert job["status"] == "failed" and job["import_record"]["status"] == "refused"
    assert "would remove every leaf" in job["error"]
    assert Leaf.objects.count() == 3

    dry = api.post("/api/imports/", {"archive": targz(OTHER), "prune": "true", "dry_run": "true"}, format="multipart")
    assert run_here(api, dry)["plan"]["removes_every_leaf"] is True and Leaf.objects.count() == 3

    response = api.post(
        "/api/imports/", {"archive": targz(OTHER), "prune": "true", "allow_remove_all": "true"}, format="multipart"
    )
    assert run_here(api, response)["status"] == "succeeded"
    assert list(Leaf.objects.values_list("path", flat=True)) == OTHER


def test_a_page_prune_that_would_remove_every_leaf_asks_for_it_explicitly(staff_curator, three, tmp_path):
    root = folder(tmp_path / "taxonomy", OTHER)
    client = client_for(staff_curator)
    body = {"source": "directory", "directory": str(root), "prune": "on"}
    preview = run_page(client, client.post(reverse("curation:import"), body))
    assert 'id="plan-removes-all"' in preview.content.decode() and 'name="allow_remove_all"' in preview.content.decode()
    confirm = reverse("curation:import_confirm", args=[preview.resolver_match.kwargs["pk"]])

    response = run_page(client, client.post(confirm))
    assert "would remove every leaf" in response.content.decode()
    assert TaxonomyImport.objects.first().status == TaxonomyImport.Status.REFUSED
    assert Leaf.objects.count() == 3

    run_page(client, client.post(confirm, {"allow_remove_all": "on"}))
    assert list(Leaf.objects.values_list("path", flat=True)) == OTHER


def test_the_command_refuses_a_prune_of_every_leaf_without_allow_remove_all(three, tmp_path):
    root = folder(tmp_path / "taxonomy", OTHER)
    with pytest.raises(CommandError, match="would remove every leaf"):
        call_command("taxonomy_import", str(root), "--prune", stdout=io.StringIO())
    assert Leaf.objects.count() == 3
    call_command("taxonomy_import", str(root), "--prune", "--allow-remove-all", stdout=io.StringIO())
    assert list(Leaf.objects.values_list("path", flat=True)) == OTHER


def test_a_page_prune_that_would_remove_nothing_imports_the_upload_it_read_once_confirmed(curator, three):
    client = client_for(curator)
    response = client.post(
        reverse("curation:import"),
        {"source": "archive", "archive": targz([*three, "compositional_skills/d"]), "prune": "on"},
    )
    preview = run_page(client, response)
    assert 'id="plan-confirm"' in preview.content.decode() and TaxonomyImport.objects.count() == 1  # `three`'s
    # The upload the dry run read is imported: the browser does not send it again.
    run_page(client, client.post(reverse("curation:import_confirm", args=[preview.resolver_match.kwargs["pk"]])))
    record = TaxonomyImport.objects.first()
    assert (record.status, record.created, record.unchanged, record.removed) == ("succeeded", 1, 3, 0)


# Written batch by batch, in one transaction


def test_an_import_written_in_several_batches_is_the_same_as_one_written_at_once(curator, monkeypatch):
    from curation.services.imports import write

    paths = [f"compositional_skills/poems/p{i}" for i in range(7)]
    edited = POEMS.replace(b"answer: a1", b"answer: changed")
    commented = b"# a comment only\n" + POEMS
    services.taxonomy_import(source=services.ImportSource.upload(targz(paths[:6]), "t.tar.gz"), user=curator)
    buffer = io.BytesIO()
    files = [(paths[0], edited), (paths[1], edited), (paths[2], commented), (paths[3], commented), (paths[4], POEMS)]
    write_tar([(f"{path}/qna.yaml", content) for path, content in [*files, (paths[6], POEMS)]], buffer)
    buffer.seek(0)
    monkeypatch.setattr(write, "BATCH_LEAVES", 2)
    record = services.taxonomy_import(source=services.ImportSource.upload(buffer, "t.tar.gz"), user=curator, prune=True)
    assert (record.created, record.updated, record.unchanged, record.removed) == (1, 2, 3, 1)
    leaves = {leaf.path: leaf for leaf in Leaf.objects.prefetch_related("seeds")}
    assert sorted(leaves) == [*paths[:5], paths[6]]
    assert [leaves[p].revision for p in paths[:5]] == [2, 2, 1, 1, 1]
    assert [s.answer for s in leaves[paths[1]].seeds.all()][:2] == ["changed", "a2"]
    assert leaves[paths[3]].imported_qna == commented.decode() and leaves[paths[4]].imported_qna == POEMS.decode()
    assert all(leaf.seeds.count() == 5 for leaf in leaves.values())
    assert LeafRevision.objects.filter(action=LeafRevision.Action.DELETE).get().path == paths[5]


def test_the_command_runs_in_its_process_printing_its_progress_on_stderr_and_its_report_on_stdout(db, tmp_path):
    root = folder(tmp_path / "taxonomy", PAIR)
    out, err = io.StringIO(), io.StringIO()
    call_command("taxonomy_import", str(root), stdout=out, stderr=err)
    assert err.getvalue().splitlines() == ["Reading the files…", "2 files read; validating and writing the leaves…"]
    assert "leaves 2 created" in out.getvalue() and "Reading" not in out.getvalue()
    assert Leaf.objects.count() == 2 and not ImportJob.objects.exists()
