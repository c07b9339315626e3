"""An import through the API is a job on a real worker: 202 at once, progress while it runs, then the result;
a second import into the taxonomy while one runs is refused, naming it; a cancelled import changes nothing."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from curation.models import ImportJob, Leaf, LeafRevision, TaxonomyImport
from tests.curation.jobs import many_leaves
from tests.support.worker import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def upload(data: bytes, name: str = "many.tar.gz") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/gzip")


def ended(api, url: str, worker):
    return wait_for(
        lambda: (job := api.get(url).json())["status"] not in ("queued", "running") and job,
        what=f"the import job at {url} to end",
        worker=worker,
        timeout=120,
    )


def test_an_upload_is_a_job_whose_progress_and_result_the_api_tells(api, import_worker):
    response = api.post("/api/imports/", {"archive": upload(many_leaves(40, broken=2))}, format="multipart")

    assert response.status_code == 202, response.json()
    job = response.json()
    assert response["Location"] == job["url"] and job["url"].endswith(f"/api/import-jobs/{job['id']}/")
    assert (job["status"], job["source"], job["dry_run"], job["import_record"]) == (
        "queued",
        "upload many.tar.gz",
        False,
        None,
    )

    job = ended(api, job["url"], import_worker)
    assert job["status"] == "succeeded", job
    assert (job["stage"], job["files_read"], job["leaves_total"], job["leaves_validated"], job["leaves_written"]) == (
        "done",
        40,
        40,
        40,
        38,
    )
    record = job["import_record"]
    assert (record["created"], record["updated"], record["unchanged"], record["rejected"]) == (38, 0, 0, 2)
    errors = sorted((p["path"], p["line"], p["field"]) for p in record["problems"])
    assert errors == [(f"compositional_skills/many/leaf_{n:05d}/qna.yaml", 1, "created_by") for n in (38, 39)]
    assert Leaf.objects.count() == 38
    assert api.get(f"/api/imports/{record['id']}/").json() == record
    assert job["id"] in [listed["id"] for listed in api.get("/api/import-jobs/").json()]
    assert list(ImportJob.objects.get(pk=job["id"]).chunks.all()) == []  # the spooled upload is gone with it

    # A dry run is a job too: its plan says what would change, and nothing did.
    response = api.post(
        "/api/imports/", {"archive": upload(many_leaves(3)), "prune": "true", "dry_run": "true"}, format="multipart"
    )
    dry = ended(api, response.json()["url"], import_worker)
    assert dry["status"] == "succeeded" and dry["import_record"] is None
    plan = dry["plan"]
    assert (plan["dry_run"], plan["updated"], plan["unchanged"], plan["removed"]) == (True, 0, 3, 35)
    assert Leaf.objects.count() == 38 and TaxonomyImport.objects.count() == 1


def test_a_second_import_while_one_runs_is_refused_naming_it_and_a_cancelled_one_changes_nothing(api, import_worker):
    big = api.post("/api/imports/", {"archive": upload(many_leaves(3000))}, format="multipart").json()
    wait_for(
        lambda: ImportJob.objects.filter(pk=big["id"], leaves_validated__gt=0).exists(),
        what="the first import to be under way",
        worker=import_worker,
        timeout=120,
    )

    second = api.post("/api/imports/", {"archive": upload(many_leaves(2))}, format="multipart")
    assert second.status_code == 409, second.json()
    assert f"Import {big['id']} of upload many.tar.gz is running" in second.json()["error"]["message"]
    assert ImportJob.objects.count() == 1
    # A dry run only reads: it runs beside the import.
    dry = api.post("/api/imports/", {"archive": upload(many_leaves(2)), "dry_run": "true"}, format="multipart")
    assert dry.status_code == 202, dry.json()

    cancelled = api.post(f"/api/import-jobs/{big['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert ended(api, dry.json()["url"], import_worker)["status"] == "succeeded"
    wait_for(
        lambda: ImportJob.objects.filter(pk=big["id"], lease_owner="").exists(),
        what="the cancelled import's worker to let it go",
        worker=import_worker,
    )
    assert not Leaf.objects.exists() and not LeafRevision.objects.exists() and not TaxonomyImport.objects.exists()
    assert api.post(f"/api/import-jobs/{big['id']}/cancel/").status_code == 409

    # With none running, the next import goes ahead.
    after = api.post("/api/imports/", {"archive": upload(many_leaves(2))}, format="multipart")
    assert after.status_code == 202
    assert ended(api, after.json()["url"], import_worker)["import_record"]["created"] == 2
