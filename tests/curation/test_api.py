"""The taxonomy REST API as a user automating it sees it: imports, leaves, seeds, documents, history, export, diff."""

import io
import re
import subprocess
import tarfile
import threading
import zipfile

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from curation.models import Leaf, LeafRevision, TaxonomyImport
from curation.taxonomy import KINDS, read_qna
from curation.taxonomy.source import write_tar
from tests.curation.jobs import run_here

JOKE = "compositional_skills/writing/freeform/jokes/puns/elephant_joke"
SPEECH = "compositional_skills/writing/freeform/jokes/speech"
YES_NO = "compositional_skills/writing/freeform/yes_no_questions"
ODD_ONE_OUT = "foundational_skills/reasoning/linguistics_reasoning/odd_one_out"
EGYPT = "knowledge/history/biography/egypt/hikmat_abu_zayd"
VALID = (JOKE, SPEECH, YES_NO, ODD_ONE_OUT, EGYPT)
NO_CREATED_BY = "compositional_skills/writing/freeform/tongue_twisters"  # line 1: "created_by" is required
NUMBER_ANSWER = "compositional_skills/writing/freeform/technical/maths/calculation"  # line 5: answer is a number


def corpus_files(corpus, *folders: str) -> list[tuple[str, bytes]]:
    return [(f"{folder}/qna.yaml", (corpus / folder / "qna.yaml").read_bytes()) for folder in folders]


def targz(files: list[tuple[str, bytes]], name: str = "taxonomy.tar.gz") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    write_tar(files, buffer)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/gzip")


def raw_targz(files: list[tuple[str, bytes]], name: str = "evil.tar.gz") -> SimpleUploadedFile:
    """A tar.gz with member names exactly as given (write_tar itself refuses unsafe names)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/gzip")


def post_archive(client: APIClient, upload: SimpleUploadedFile, **fields):
    return client.post("/api/imports/", {"archive": upload, **fields}, format="multipart")


def import_files(client: APIClient, files: list[tuple[str, bytes]]) -> dict:
    """Import `files` through the API, the job run here; the import's record."""
    job = run_here(client, post_archive(client, targz(files)))
    assert job["status"] == "succeeded", job
    return job["import_record"]


def create_leaf(client: APIClient, path: str, **fields) -> dict:
    response = client.post("/api/leaves/", {"path": path, **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def add_skill_seeds(client: APIClient, leaf_id: int, count: int, start: int = 0) -> list[dict]:
    seeds = []
    for n in range(start, start + count):
        response = client.post(
            "/api/seeds/", {"leaf": leaf_id, "question": f"Question {n}?", "answer": f"Answer {n}."}, format="json"
        )
        assert response.status_code == 201, response.json()
        seeds.append(response.json())
    return seeds


def get_leaf(client: APIClient, leaf_id: int):
    response = client.get(f"/api/leaves/{leaf_id}/")
    assert response.status_code == 200, response.json()
    return response


def leaf_id(client: APIClient, path: str) -> int:
    (leaf,) = client.get("/api/leaves/", {"paths": path}).json()["results"]
    return leaf["id"]


def all_pages(client: APIClient, url: str, params: dict | None = None) -> list[dict]:
    results, response = [], client.get(url, params or {})
    while True:
        assert response.status_code == 200, response.json()
        body = response.json()
        results += body["results"]
        if not body["next"]:
            return results
        response = client.get(body["next"])


def assert_error(response, status: int, *, field: str | None = None, contains: str = "") -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) >= {"error", "errors"}
    assert body["errors"] and body["error"] == body["errors"][0]
    assert set(body["error"]) >= {"message", "field", "line", "path"}
    if field is not None:
        assert body["error"]["field"] == field, body
    assert contains in body["error"]["message"], body
    return body["error"]


@pytest.fixture
def staff_api(staff_curator) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_curator)
    return client


@pytest.fixture
def small(api, corpus) -> dict:
    """Five valid leaves (skills and knowledge) imported through the API."""
    return import_files(api, corpus_files(corpus, *VALID))


@pytest.fixture
def haiku(api) -> dict:
    """A new compositional skills leaf with five seeds: valid."""
    leaf = create_leaf(api, "compositional_skills/writing/poetry/haiku", task_description="Write a haiku.")
    add_skill_seeds(api, leaf["id"], 5)
    return get_leaf(api, leaf["id"]).json()


# Imports


def test_archive_import_creates_valid_leaves_and_reports_every_rejected_file(api, corpus):
    files = corpus_files(corpus, JOKE, SPEECH, EGYPT, NO_CREATED_BY, NUMBER_ANSWER)
    job = run_here(api, post_archive(api, targz(files)))

    body = job["import_record"]
    assert body["status"] == "succeeded"
    assert body["source"] == "upload taxonomy.tar.gz"  # as the import page records it
    assert body["created_by"] == "carla"
    assert (body["files_seen"], body["created"], body["updated"], body["unchanged"], body["rejected"]) == (
        5,
        3,
        0,
        0,
        2,
    )
    errors = {(p["path"], p["line"], p["field"]) for p in body["problems"] if p["level"] == "error"}
    assert (f"{NO_CREATED_BY}/qna.yaml", 1, "created_by") in errors
    assert (f"{NUMBER_ANSWER}/qna.yaml", 5, "seed_examples[0].answer") in errors
    assert all(p["message"] for p in body["problems"])

    paths = [leaf["path"] for leaf in all_pages(api, "/api/leaves/")]
    assert paths == sorted([JOKE, SPEECH, EGYPT])
    assert api.get(f"/api/imports/{body['id']}/").json() == body
    assert [record["id"] for record in api.get("/api/imports/").json()] == [body["id"]]


def test_reimport_reports_updated_and_unchanged_leaves(api, corpus):
    import_files(api, corpus_files(corpus, JOKE, SPEECH))
    edited = (corpus / SPEECH / "qna.yaml").read_bytes().replace(b"created_by: ai_cooper", b"created_by: someone")

    body = import_files(api, [*corpus_files(corpus, JOKE), (f"{SPEECH}/qna.yaml", edited)])

    assert (body["created"], body["updated"], body["unchanged"]) == (0, 1, 1)
    speech = get_leaf(api, leaf_id(api, SPEECH)).json()
    assert (speech["created_by"], speech["revision"]) == ("someone", 2)
    latest = api.get(f"/api/leaves/{speech['id']}/history/").json()[0]
    assert (latest["action"], latest["changes"]) == ("import", ["created_by changed"])


def test_reimport_of_an_invalid_file_keeps_the_leaf_as_it_was(api, corpus):
    import_files(api, corpus_files(corpus, JOKE))
    before = get_leaf(api, leaf_id(api, JOKE)).json()
    broken = (corpus / JOKE / "qna.yaml").read_bytes().replace(b"created_by: mletalie\n", b"")

    job = run_here(api, post_archive(api, targz([(f"{JOKE}/qna.yaml", broken)])))

    # Every file rejected: the import failed (imported nothing), and says so.
    assert job["status"] == "failed" and "Every file was rejected" in job["error"]
    body = job["import_record"]
    assert body["status"] == "failed" and body["message"] == job["error"]
    assert (body["created"], body["updated"], body["unchanged"], body["rejected"]) == (0, 0, 0, 1)
    assert body["problems"][0]["field"] == "created_by"
    assert get_leaf(api, before["id"]).json() == before


def test_zip_archive_imports_like_a_tarball(api, corpus):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in corpus_files(corpus, JOKE, EGYPT):
            archive.writestr(f"taxonomy-main/{path}", data)

    job = run_here(api, post_archive(api, SimpleUploadedFile("taxonomy-main.zip", buffer.getvalue())))

    assert job["import_record"]["created"] == 2
    assert sorted(Leaf.objects.values_list("path", flat=True)) == sorted([JOKE, EGYPT])


def test_import_with_prune_removes_leaves_missing_from_the_archive(api, corpus):
    import_files(api, corpus_files(corpus, JOKE, SPEECH, YES_NO))

    job = run_here(api, post_archive(api, targz(corpus_files(corpus, JOKE)), prune="true"))

    assert job["import_record"]["removed"] == 2
    assert [leaf["path"] for leaf in all_pages(api, "/api/leaves/")] == [JOKE]


def test_archive_with_path_traversal_is_refused_naming_the_member_and_changes_nothing(api, corpus):
    import_files(api, corpus_files(corpus, JOKE))
    before = list(Leaf.objects.values_list("path", "revision", "content_hash"))
    good = (corpus / SPEECH / "qna.yaml").read_bytes()

    job = run_here(api, post_archive(api, raw_targz([(f"{SPEECH}/qna.yaml", good), ("../../etc/evil/qna.yaml", good)])))

    assert job["status"] == "failed" and "path traversal" in job["error"]
    assert job["import_record"]["status"] == "refused"
    assert job["import_record"]["problems"][0]["path"] == "../../etc/evil/qna.yaml"
    assert list(Leaf.objects.values_list("path", "revision", "content_hash")) == before
    statuses = [record["status"] for record in api.get("/api/imports/").json()]
    assert statuses == ["refused", "succeeded"]


@pytest.mark.parametrize(
    "data",
    [{}, {"directory": "/tmp", "git": "/tmp"}],
    ids=["no-source", "two-sources"],
)
def test_import_needs_exactly_one_source(api, data):
    assert_error(api.post("/api/imports/", data, format="json"), 400, contains="exactly one")
    assert not TaxonomyImport.objects.exists()


def test_archive_that_is_not_an_archive_is_400(api):
    upload = SimpleUploadedFile("taxonomy.tar.gz", b"this is not gzip")
    assert_error(post_archive(api, upload), 400, contains="is not a gzip/tar/zip archive")
    assert not Leaf.objects.exists()


@pytest.mark.parametrize("source", ["directory", "git"])
def test_server_path_imports_are_403_for_a_curator_without_staff(api, corpus, source):
    response = api.post("/api/imports/", {source: str(corpus)}, format="json")

    assert_error(response, 403, contains="staff")
    assert not Leaf.objects.exists()
    assert not TaxonomyImport.objects.exists()


def test_staff_curator_imports_a_directory_on_the_server(staff_api, corpus, tmp_path):
    for path, data in corpus_files(corpus, JOKE, EGYPT, NO_CREATED_BY):
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_bytes(data)

    body = run_here(staff_api, staff_api.post("/api/imports/", {"directory": str(tmp_path)}, format="json"))

    body = body["import_record"]
    assert (body["source"], body["created"], body["rejected"]) == (str(tmp_path), 2, 1)
    assert body["problems"][0]["path"] == f"{NO_CREATED_BY}/qna.yaml"
    assert sorted(Leaf.objects.values_list("path", flat=True)) == sorted([EGYPT, JOKE])


def git(repo, *args: str) -> str:
    command = ["git", "-c", "user.name=LabWeb Test", "-c", "user.email=labweb@example.com"]
    command += ["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", "-C", str(repo), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_staff_curator_imports_committed_files_of_a_git_ref(staff_api, corpus, tmp_path):
    repo = tmp_path / "taxonomy"
    repo.mkdir()
    git(repo, "init", "-q")
    for commit, folders in enumerate([(JOKE,), (SPEECH, ODD_ONE_OUT)]):
        for path, data in corpus_files(corpus, *folders):
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(data)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"commit {commit}")
    first = git(repo, "rev-parse", "HEAD~1")
    (repo / YES_NO).mkdir(parents=True)
    (repo / YES_NO / "qna.yaml").write_bytes((corpus / YES_NO / "qna.yaml").read_bytes())  # not committed

    body = run_here(staff_api, staff_api.post("/api/imports/", {"git": str(repo), "ref": first}, format="json"))
    assert (body["import_record"]["source"], body["import_record"]["created"]) == (f"{repo}@{first}", 1)
    assert list(Leaf.objects.values_list("path", flat=True)) == [JOKE]

    body = run_here(staff_api, staff_api.post("/api/imports/", {"git": str(repo)}, format="json"))  # ref: HEAD
    assert (body["import_record"]["created"], body["import_record"]["unchanged"]) == (2, 1)
    assert sorted(Leaf.objects.values_list("path", flat=True)) == sorted([JOKE, SPEECH, ODD_ONE_OUT])


def test_git_import_of_an_unknown_ref_is_refused_and_changes_nothing(staff_api, tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "empty")

    response = staff_api.post("/api/imports/", {"git": str(tmp_path), "ref": "no-such-branch"}, format="json")

    job = run_here(staff_api, response)
    assert job["status"] == "failed" and "no-such-branch" in job["error"]
    assert job["import_record"]["status"] == "refused"
    assert not Leaf.objects.exists()


# Leaves: list and read


def test_leaf_list_walks_the_whole_corpus_by_cursor_in_path_order(api, imported, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):
        first = api.get("/api/leaves/")
    assert first.status_code == 200
    body = first.json()
    assert len(body["results"]) == 100 and body["previous"] is None and body["next"]
    assert "count" not in body  # cursor pagination: no COUNT(*) over the table

    with django_assert_max_num_queries(2):
        second = api.get(body["next"])
    assert second.status_code == 200

    with django_assert_max_num_queries(2):  # the user's roles, then one SELECT for the page, filters and all
        filtered = api.get("/api/leaves/", {"under": "knowledge", "is_valid": "true", "q": "a", "kind": "knowledge"})
    assert filtered.status_code == 200 and filtered.json()["results"]

    paths = [leaf["path"] for leaf in all_pages(api, "/api/leaves/")]
    assert len(paths) == len(set(paths)) == imported.created > 200
    assert paths == list(Leaf.objects.order_by("path").values_list("path", flat=True))  # the database's collation
    leaf = body["results"][0]
    assert set(leaf) >= {"id", "path", "kind", "is_valid", "problems", "revision", "seed_count", "content_hash"}
    assert "seeds" not in leaf


def test_leaf_list_filters_by_kind_validity_text_and_folder(api, small):
    create_leaf(api, "compositional_skills/writing/freeform/jokes_draft", task_description="Draft.")

    def paths(**params):
        return [leaf["path"] for leaf in all_pages(api, "/api/leaves/", params)]

    assert paths(kind="knowledge") == [EGYPT]
    assert paths(kind="foundational_skills") == [ODD_ONE_OUT]
    assert paths(is_valid="false") == ["compositional_skills/writing/freeform/jokes_draft"]
    assert len(paths(is_valid="true")) == len(VALID)
    assert set(paths(q="JOKE")) == {JOKE, SPEECH, "compositional_skills/writing/freeform/jokes_draft"}
    # A folder filter matches whole path segments: jokes_draft is not under jokes.
    assert paths(under="compositional_skills/writing/freeform/jokes") == [JOKE, SPEECH]
    assert paths(under="compositional_skills/writing/freeform/jokes/") == [JOKE, SPEECH]
    assert paths(under=SPEECH) == [SPEECH]
    assert paths(under="knowledge", kind="knowledge") == [EGYPT]


def test_leaf_list_with_an_unknown_kind_is_400_naming_kind(api, db):
    assert_error(api.get("/api/leaves/", {"kind": "recipes"}), 400, field="kind")


def test_leaf_list_never_silently_ignores_an_is_valid_value_it_does_not_understand(api, haiku):
    create_leaf(api, "compositional_skills/drafts/empty")

    for value in ("1", "yes", "maybe"):
        response = api.get("/api/leaves/", {"is_valid": value})
        # Either understood (only the valid leaf) or refused; never every leaf as if no filter had been given.
        if response.status_code == 400:
            assert_error(response, 400, field="is_valid")
        else:
            assert [leaf["is_valid"] for leaf in response.json()["results"]] == [True], (value, response.json())


def test_leaf_detail_has_seeds_documents_and_etag(api, small, corpus):
    egypt = leaf_id(api, EGYPT)
    api.post("/api/documents/", {"leaf": egypt, "name": "source.md", "content": "# Source\n"}, format="json")

    response = get_leaf(api, egypt)

    body = response.json()
    assert response["ETag"] == f'"{body["revision"]}"'
    source = yaml.safe_load((corpus / EGYPT / "qna.yaml").read_bytes())
    assert [seed["context"] for seed in body["seeds"]] == [seed["context"] for seed in source["seed_examples"]]
    assert [seed["position"] for seed in body["seeds"]] == list(range(len(source["seed_examples"])))
    assert body["seed_count"] == len(body["seeds"])
    assert [doc["name"] for doc in body["documents"]] == ["source.md"]
    assert "content" not in body["documents"][0]


def test_missing_leaf_is_404_with_error_shape(api, db):
    assert_error(api.get("/api/leaves/999999/"), 404)


# Leaves: write


def test_new_leaf_is_invalid_until_it_has_five_seeds(api):
    response = api.post(
        "/api/leaves/",
        {"path": "compositional_skills/writing/poetry/haiku", "task_description": "Write a haiku."},
        format="json",
    )

    assert response.status_code == 201, response.json()
    leaf = response.json()
    assert response["ETag"] == '"1"'
    assert (leaf["kind"], leaf["version"], leaf["created_by"], leaf["revision"]) == (
        "compositional_skills",
        3,
        "carla",
        1,
    )
    assert leaf["is_valid"] is False
    assert "seed_examples" in {p["field"] for p in leaf["problems"] if p["level"] == "error"}

    add_skill_seeds(api, leaf["id"], 4)
    assert get_leaf(api, leaf["id"]).json()["is_valid"] is False
    add_skill_seeds(api, leaf["id"], 1, start=4)
    after = get_leaf(api, leaf["id"]).json()
    assert after["is_valid"] is True and after["problems"] == []
    assert after["seed_count"] == 5 and after["revision"] == 6


@pytest.mark.parametrize(
    "path",
    ["", "../etc/passwd", "recipes/cakes", "knowledge", "compositional_skills/./x", "compositional_skills/.hidden"],
)
def test_create_leaf_with_a_bad_path_is_400_naming_path(api, path):
    assert_error(api.post("/api/leaves/", {"path": path}, format="json"), 400, field="path")
    assert not Leaf.objects.exists()


def test_create_leaf_at_a_taken_path_is_400(api, haiku):
    response = api.post("/api/leaves/", {"path": haiku["path"]}, format="json")
    assert_error(response, 400, field="path", contains="already exists")


def test_patch_with_if_match_equal_to_the_etag_updates_and_returns_the_new_etag(api, haiku):
    etag = get_leaf(api, haiku["id"])["ETag"]

    response = api.patch(
        f"/api/leaves/{haiku['id']}/",
        {"task_description": "Write a haiku about rain."},
        format="json",
        HTTP_IF_MATCH=etag,
    )

    assert response.status_code == 200, response.json()
    assert response.json()["task_description"] == "Write a haiku about rain."
    assert response["ETag"] == f'"{haiku["revision"] + 1}"' != etag
    assert get_leaf(api, haiku["id"])["ETag"] == response["ETag"]


def test_patch_with_stale_if_match_is_412_and_changes_nothing(api, haiku):
    stale = get_leaf(api, haiku["id"])["ETag"]
    api.patch(f"/api/leaves/{haiku['id']}/", {"domain": "poetry"}, format="json", HTTP_IF_MATCH=stale)
    history = len(api.get(f"/api/leaves/{haiku['id']}/history/").json())

    response = api.patch(
        f"/api/leaves/{haiku['id']}/", {"task_description": "Overwritten?"}, format="json", HTTP_IF_MATCH=stale
    )

    assert_error(response, 412, field="If-Match", contains="since you opened it")
    after = get_leaf(api, haiku["id"]).json()
    assert after["task_description"] == "Write a haiku." and after["domain"] == "poetry"
    assert after["revision"] == haiku["revision"] + 1
    assert len(api.get(f"/api/leaves/{haiku['id']}/history/").json()) == history


@pytest.mark.django_db(transaction=True)
def test_two_patches_sent_at_once_with_the_same_etag_one_wins_and_the_other_is_412(curator):
    api = APIClient()
    api.force_authenticate(curator)
    leaf = create_leaf(api, "compositional_skills/writing/poetry/haiku", task_description="Write a haiku.")
    barrier, responses = threading.Barrier(2), {}

    def patch(text: str) -> None:
        client = APIClient()
        client.force_authenticate(curator)
        try:
            barrier.wait(timeout=10)
            responses[text] = client.patch(
                f"/api/leaves/{leaf['id']}/", {"task_description": text}, format="json", HTTP_IF_MATCH='"1"'
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=patch, args=(text,)) for text in ("First.", "Second.")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(r.status_code for r in responses.values()) == [200, 412]
    (winner,) = [text for text, r in responses.items() if r.status_code == 200]
    after = get_leaf(api, leaf["id"]).json()
    assert (after["task_description"], after["revision"]) == (winner, 2)
    assert len(api.get(f"/api/leaves/{leaf['id']}/history/").json()) == 2


def test_patch_with_stale_revision_field_is_409_and_changes_nothing(api, haiku):
    api.patch(f"/api/leaves/{haiku['id']}/", {"domain": "poetry"}, format="json")

    response = api.patch(
        f"/api/leaves/{haiku['id']}/",
        {"task_description": "Overwritten?", "revision": haiku["revision"]},
        format="json",
    )

    assert_error(response, 409, field="revision")
    assert get_leaf(api, haiku["id"]).json()["task_description"] == "Write a haiku."


def test_patch_with_current_revision_field_updates(api, haiku):
    response = api.patch(
        f"/api/leaves/{haiku['id']}/", {"domain": "poetry", "revision": haiku["revision"]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["revision"] == haiku["revision"] + 1


def test_patch_with_an_if_match_this_api_never_issued_is_400(api, haiku):
    response = api.patch(f"/api/leaves/{haiku['id']}/", {"domain": "x"}, format="json", HTTP_IF_MATCH='"abc"')
    assert_error(response, 400, field="If-Match")
    assert get_leaf(api, haiku["id"]).json()["domain"] is None


def test_patch_that_changes_nothing_keeps_the_revision(api, haiku):
    response = api.patch(f"/api/leaves/{haiku['id']}/", {"task_description": "Write a haiku."}, format="json")
    assert response.status_code == 200
    assert response["ETag"] == f'"{haiku["revision"]}"'


def test_move_leaf_changes_its_path_and_kind_and_records_it(api, haiku):
    etag = get_leaf(api, haiku["id"])["ETag"]

    response = api.post(
        f"/api/leaves/{haiku['id']}/move/",
        {"path": "foundational_skills/poetry/haiku"},
        format="json",
        HTTP_IF_MATCH=etag,
    )

    assert response.status_code == 200, response.json()
    moved = response.json()
    assert (moved["path"], moved["kind"], moved["id"]) == (
        "foundational_skills/poetry/haiku",
        "foundational_skills",
        haiku["id"],
    )
    assert response["ETag"] == f'"{haiku["revision"] + 1}"'
    latest = api.get(f"/api/leaves/{haiku['id']}/history/").json()[0]
    assert latest["action"] == "move"
    assert latest["changes"] == [f"moved from {haiku['path']} to foundational_skills/poetry/haiku"]


def test_move_leaf_onto_a_taken_path_or_with_stale_etag_changes_nothing(api, haiku):
    other = create_leaf(api, "compositional_skills/writing/poetry/limerick")
    url = f"/api/leaves/{haiku['id']}/move/"

    assert_error(api.post(url, {"path": other["path"]}, format="json"), 400, field="path", contains="already exists")
    assert_error(api.post(url, {"path": "compositional_skills/x/y"}, format="json", HTTP_IF_MATCH='"1"'), 412)
    assert_error(api.post(url, {"path": "../outside"}, format="json"), 400, field="path")
    assert get_leaf(api, haiku["id"]).json()["path"] == haiku["path"]


def test_delete_leaf_removes_it_and_keeps_its_last_revision(api, haiku):
    url = f"/api/leaves/{haiku['id']}/"
    assert_error(api.delete(url, HTTP_IF_MATCH='"1"'), 412)
    assert api.get(url).status_code == 200

    response = api.delete(url, HTTP_IF_MATCH=get_leaf(api, haiku["id"])["ETag"])

    assert response.status_code == 204
    assert_error(api.get(url), 410, contains="its history is kept")
    assert not [seed for seed in api.get("/api/seeds/").json() if seed["leaf"] == haiku["id"]]
    deleted = LeafRevision.objects.get(path=haiku["path"], action="delete")
    assert deleted.number == haiku["revision"] + 1
    assert len(deleted.snapshot["qna"]["seed_examples"]) == 5


# Seeds


def test_five_seeds_make_a_new_skills_leaf_valid_and_deleting_one_invalidates_it(api):
    leaf = create_leaf(api, "compositional_skills/writing/poetry/haiku", task_description="Write a haiku.")
    seeds = add_skill_seeds(api, leaf["id"], 5)
    assert [seed["position"] for seed in seeds] == [0, 1, 2, 3, 4]
    assert get_leaf(api, leaf["id"]).json()["is_valid"] is True

    assert api.delete(f"/api/seeds/{seeds[1]['id']}/").status_code == 204

    after = get_leaf(api, leaf["id"]).json()
    assert after["is_valid"] is False
    assert [(s["position"], s["question"]) for s in after["seeds"]] == [
        (0, "Question 0?"),
        (1, "Question 2?"),
        (2, "Question 3?"),
        (3, "Question 4?"),
    ]
    assert_error(api.get(f"/api/seeds/{seeds[1]['id']}/"), 404)


def test_seed_added_at_a_position_is_inserted_there(api, haiku):
    response = api.post(
        "/api/seeds/", {"leaf": haiku["id"], "question": "First?", "answer": "Yes.", "position": 0}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["position"] == 0
    questions = [seed["question"] for seed in get_leaf(api, haiku["id"]).json()["seeds"]]
    assert questions[:2] == ["First?", "Question 0?"] and len(questions) == 6


def test_patch_seed_changes_its_text_and_the_leaf_revision(api, haiku):
    seed = haiku["seeds"][2]

    response = api.patch(
        f"/api/seeds/{seed['id']}/",
        {"answer": "An old silent pond.", "context": "Basho"},
        format="json",
        HTTP_IF_MATCH=f'"{haiku["revision"]}"',
    )

    assert response.status_code == 200, response.json()
    assert (response.json()["answer"], response.json()["context"]) == ("An old silent pond.", "Basho")
    assert response.json()["question"] == seed["question"]
    leaf = get_leaf(api, haiku["id"]).json()
    assert leaf["revision"] == haiku["revision"] + 1
    assert leaf["seeds"][2]["answer"] == "An old silent pond."
    assert api.get(f"/api/leaves/{haiku['id']}/history/").json()[0]["changes"] == [
        "seed example 3: answer, context changed"
    ]


def test_seed_writes_with_stale_if_match_are_412_and_change_nothing(api, haiku):
    seed = haiku["seeds"][0]
    stale = '"1"'

    assert_error(api.patch(f"/api/seeds/{seed['id']}/", {"answer": "x"}, format="json", HTTP_IF_MATCH=stale), 412)
    assert_error(
        api.post(
            "/api/seeds/", {"leaf": haiku["id"], "question": "q", "answer": "a"}, format="json", HTTP_IF_MATCH=stale
        ),
        412,
    )
    assert_error(api.post(f"/api/seeds/{seed['id']}/move/", {"position": 3}, format="json", HTTP_IF_MATCH=stale), 412)
    assert_error(api.delete(f"/api/seeds/{seed['id']}/", HTTP_IF_MATCH=stale), 412)
    assert_error(api.patch(f"/api/seeds/{seed['id']}/", {"answer": "x", "revision": 1}, format="json"), 409)

    assert get_leaf(api, haiku["id"]).json() == haiku


def test_move_seed_changes_the_order_of_the_leafs_seeds(api, haiku):
    last = haiku["seeds"][4]

    response = api.post(f"/api/seeds/{last['id']}/move/", {"position": 1}, format="json")

    assert response.status_code == 200, response.json()
    expected = ["Question 0?", "Question 4?", "Question 1?", "Question 2?", "Question 3?"]
    assert [seed["question"] for seed in response.json()] == expected
    leaf = get_leaf(api, haiku["id"]).json()
    assert [(seed["position"], seed["question"]) for seed in leaf["seeds"]] == list(enumerate(expected))
    assert api.get(f"/api/leaves/{haiku['id']}/history/").json()[0]["changes"] == ["seed examples reordered"]
    assert [seed["question"] for seed in api.get("/api/seeds/", {"leaf": haiku["id"]}).json()] == expected


def test_seed_list_filters_by_leaf(api, haiku):
    other = create_leaf(api, "compositional_skills/writing/poetry/limerick", task_description="Limericks.")
    add_skill_seeds(api, other["id"], 2, start=10)

    seeds = api.get("/api/seeds/", {"leaf": other["id"]}).json()

    assert [(s["leaf"], s["question"]) for s in seeds] == [(other["id"], "Question 10?"), (other["id"], "Question 11?")]
    assert len(api.get("/api/seeds/").json()) == 7


KNOWLEDGE_FIELDS = {
    "domain": "astronomy",
    "document_outline": "Facts about the planets of the solar system.",
    "document_repo": "https://github.com/example/planets",
    "document_commit": "0123456789abcdef0123456789abcdef01234567",
    "document_patterns": ["planets.md"],
}


def knowledge_seed(n: int) -> dict:
    return {
        "context": f"Planet {n} orbits the sun.",
        "questions_and_answers": [
            {"question": f"What does planet {n} orbit ({k})?", "answer": f"The sun ({k})."} for k in range(3)
        ],
    }


@pytest.fixture
def planets(api) -> dict:
    leaf = create_leaf(api, "knowledge/science/astronomy/planets", **KNOWLEDGE_FIELDS)
    for n in range(5):
        response = api.post("/api/seeds/", {"leaf": leaf["id"], **knowledge_seed(n)}, format="json")
        assert response.status_code == 201, response.json()
    return get_leaf(api, leaf["id"]).json()


def test_knowledge_leaf_seeds_hold_a_context_and_question_answer_pairs(api, planets):
    assert planets["kind"] == "knowledge"
    assert planets["is_valid"] is True, planets["problems"]
    assert [(p["level"], p["field"]) for p in planets["problems"]] == [("warning", "document")]
    seed = planets["seeds"][3]
    assert seed["context"] == "Planet 3 orbits the sun."
    assert seed["questions_and_answers"][2] == {"question": "What does planet 3 orbit (2)?", "answer": "The sun (2)."}
    assert seed["question"] is None and seed["answer"] is None


def test_knowledge_seed_added_without_pairs_gets_three_empty_ones_and_the_leaf_turns_invalid(api, planets):
    response = api.post("/api/seeds/", {"leaf": planets["id"]}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["questions_and_answers"] == [{"question": "", "answer": ""}] * 3
    assert get_leaf(api, planets["id"]).json()["is_valid"] is False


def test_new_knowledge_leaf_takes_its_domain_from_the_folder_name(api):
    leaf = create_leaf(api, "knowledge/science/black_holes")
    assert (leaf["kind"], leaf["domain"]) == ("knowledge", "black holes")


# Documents


def test_markdown_upload_is_listed_by_leaf_retrieved_with_content_and_deleted(api, planets):
    text = "# Planets\n\nMercury is the closest planet to the sun. ☉\n"
    upload = SimpleUploadedFile("planets.md", text.encode("utf-8"), content_type="text/markdown")

    response = api.post("/api/documents/", {"leaf": planets["id"], "file": upload}, format="multipart")

    assert response.status_code == 201, response.json()
    document = response.json()
    assert (document["leaf"], document["name"], document["size"]) == (planets["id"], "planets.md", len(text.encode()))
    assert "content" not in document
    listed = api.get("/api/documents/", {"leaf": planets["id"]}).json()
    assert [d["id"] for d in listed] == [document["id"]] and "content" not in listed[0]
    assert api.get(f"/api/documents/{document['id']}/").json()["content"] == text
    leaf = get_leaf(api, planets["id"]).json()
    assert leaf["problems"] == [] and leaf["revision"] == planets["revision"] + 1
    assert api.get(f"/api/leaves/{planets['id']}/history/").json()[0]["changes"] == ["document planets.md added"]

    assert api.delete(f"/api/documents/{document['id']}/").status_code == 204
    assert api.get("/api/documents/", {"leaf": planets["id"]}).json() == []
    assert_error(api.get(f"/api/documents/{document['id']}/"), 404)
    assert [p["field"] for p in get_leaf(api, planets["id"]).json()["problems"]] == ["document"]


def test_document_from_name_and_content_replaces_one_of_the_same_name(api, planets):
    first = api.post("/api/documents/", {"leaf": planets["id"], "name": "a.md", "content": "one"}, format="json")
    second = api.post("/api/documents/", {"leaf": planets["id"], "name": "a.md", "content": "two"}, format="json")

    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert api.get(f"/api/documents/{first.json()['id']}/").json()["content"] == "two"


@pytest.mark.parametrize("name", ["notes.txt", "planets", ".hidden.md", "script.md.exe"])
def test_document_with_a_non_markdown_name_is_400_on_name(api, planets, name):
    upload = SimpleUploadedFile(name, b"# text\n")

    response = api.post("/api/documents/", {"leaf": planets["id"], "file": upload}, format="multipart")

    assert_error(response, 400, field="name")
    assert api.get("/api/documents/", {"leaf": planets["id"]}).json() == []
    assert get_leaf(api, planets["id"]).json()["revision"] == planets["revision"]


def test_document_that_is_not_utf8_is_400_with_its_line(api, planets):
    upload = SimpleUploadedFile("latin1.md", b"# Title\n\ncaf\xe9\n")

    response = api.post("/api/documents/", {"leaf": planets["id"], "file": upload}, format="multipart")

    error = assert_error(response, 400, field="content", contains="not UTF-8")
    assert (error["line"], error["path"]) == (3, "latin1.md")


def test_document_without_file_or_content_is_400(api, planets):
    assert_error(api.post("/api/documents/", {"leaf": planets["id"]}, format="json"), 400, contains="Send a file")


# qna.yaml and history


def test_qna_endpoint_returns_yaml_that_validates(api, planets):
    response = api.get(f"/api/leaves/{planets['id']}/qna/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    qna = read_qna(response.content, f"{planets['path']}/qna.yaml")
    assert qna.valid, qna.problems
    assert qna.data["domain"] == "astronomy"
    assert qna.data["document"] == {
        "repo": KNOWLEDGE_FIELDS["document_repo"],
        "commit": KNOWLEDGE_FIELDS["document_commit"],
        "patterns": ["planets.md"],
    }
    assert [seed["context"] for seed in qna.data["seed_examples"]] == [f"Planet {n} orbits the sun." for n in range(5)]


def test_qna_of_an_imported_leaf_holds_what_the_file_held(api, small, corpus):
    response = api.get(f"/api/leaves/{leaf_id(api, SPEECH)}/qna/")
    assert read_qna(response.content, f"{SPEECH}/qna.yaml").data == yaml.safe_load(
        (corpus / SPEECH / "qna.yaml").read_bytes()
    )


def test_history_lists_each_revision_newest_first_with_its_changes(api):
    leaf = create_leaf(api, "compositional_skills/writing/poetry/haiku", task_description="Write a haiku.")
    api.patch(f"/api/leaves/{leaf['id']}/", {"task_description": "Write a haiku about rain."}, format="json")
    add_skill_seeds(api, leaf["id"], 1)
    api.post(f"/api/leaves/{leaf['id']}/move/", {"path": "compositional_skills/poetry/haiku"}, format="json")

    history = api.get(f"/api/leaves/{leaf['id']}/history/").json()

    assert [(r["number"], r["action"], r["author"]) for r in history] == [
        (4, "move", "carla"),
        (3, "update", "carla"),
        (2, "update", "carla"),
        (1, "create", "carla"),
    ]
    assert [r["changes"] for r in history] == [
        ["moved from compositional_skills/writing/poetry/haiku to compositional_skills/poetry/haiku"],
        ["seed example 1 added"],
        ["task description changed"],
        ["created"],
    ]
    assert "snapshot" not in history[0]


def test_history_revision_returns_the_snapshot_of_that_revision(api):
    leaf = create_leaf(api, "compositional_skills/writing/poetry/haiku", task_description="Write a haiku.")
    api.patch(f"/api/leaves/{leaf['id']}/", {"task_description": "Changed."}, format="json")

    first = api.get(f"/api/leaves/{leaf['id']}/history/1/")

    assert first.status_code == 200
    body = first.json()
    assert (body["number"], body["action"]) == (1, "create")
    assert body["snapshot"]["path"] == "compositional_skills/writing/poetry/haiku"
    assert body["snapshot"]["qna"]["task_description"] == "Write a haiku."
    assert api.get(f"/api/leaves/{leaf['id']}/history/2/").json()["snapshot"]["qna"]["task_description"] == "Changed."


def test_history_revision_that_does_not_exist_is_404(api):
    leaf = create_leaf(api, "compositional_skills/writing/poetry/haiku")
    assert_error(api.get(f"/api/leaves/{leaf['id']}/history/7/"), 404)


# Export


def test_export_reimports_with_everything_unchanged(api, imported):
    create_leaf(api, "compositional_skills/drafts/unfinished", task_description="Not ready yet.")
    egypt = leaf_id(api, EGYPT)
    api.post(
        "/api/documents/", {"leaf": egypt, "name": "biography.md", "content": "# Hikmat Abu Zayd\n"}, format="json"
    )
    api.patch(f"/api/leaves/{egypt}/", {"attribution": "Source: Wikipedia, CC BY-SA 4.0\n"}, format="json")
    valid = Leaf.objects.filter(is_valid=True).count()
    revisions = LeafRevision.objects.count()

    response = api.get("/api/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/gzip"
    assert response["Content-Disposition"] == 'attachment; filename="taxonomy.tar.gz"'
    assert response["X-LabWeb-Skipped-Invalid"] == "1"
    archive_bytes = response.getvalue()
    with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as archive:
        names = set(archive.getnames())
    assert sum(name.endswith("/qna.yaml") for name in names) == valid == imported.created
    assert {f"{EGYPT}/biography.md", f"{EGYPT}/attribution.txt"} <= names
    assert "compositional_skills/drafts/unfinished/qna.yaml" not in names

    body = run_here(api, post_archive(api, SimpleUploadedFile("taxonomy.tar.gz", archive_bytes)))
    body = body["import_record"]
    assert body["status"] == "succeeded", body
    assert (body["created"], body["updated"], body["unchanged"], body["rejected"]) == (0, 0, valid, 0)
    assert LeafRevision.objects.count() == revisions
    # An import that changed nothing leaves the baseline where it was: the browser's edits still show as changed.
    assert api.get("/api/diff/").json()["modified"] == [EGYPT]


# Diff and snapshots


def test_diff_lists_edits_since_the_last_import_and_a_snapshot_resets_the_baseline(api, small):
    clean = api.get("/api/diff/").json()
    assert (clean["added"], clean["modified"], clean["removed"], clean["unchanged"]) == ([], [], [], len(VALID))
    assert clean["baseline"]["name"] == "Import of upload taxonomy.tar.gz"

    api.patch(f"/api/leaves/{leaf_id(api, SPEECH)}/", {"created_by": "someone-else"}, format="json")
    create_leaf(api, "compositional_skills/writing/poetry/haiku")
    api.delete(f"/api/leaves/{leaf_id(api, JOKE)}/")

    diff = api.get("/api/diff/").json()
    assert (diff["added"], diff["modified"], diff["removed"], diff["unchanged"]) == (
        ["compositional_skills/writing/poetry/haiku"],
        [SPEECH],
        [JOKE],
        len(VALID) - 2,
    )

    response = api.post("/api/snapshots/", {"name": "after review"}, format="json")
    assert response.status_code == 201, response.json()
    snapshot = response.json()
    assert (snapshot["name"], snapshot["created_by"], snapshot["leaves"]) == ("after review", "carla", len(VALID))
    against = api.get("/api/diff/", {"baseline": snapshot["id"]}).json()
    assert (against["added"], against["modified"], against["removed"]) == ([], [], [])
    assert against["unchanged"] == len(VALID)
    assert against["baseline"]["id"] == snapshot["id"]
    assert api.get("/api/diff/").json()["modified"] == [SPEECH]  # the default baseline is still the import
    assert [s["name"] for s in api.get("/api/snapshots/").json()][0] == "after review"
    assert api.get(f"/api/snapshots/{snapshot['id']}/").json() == snapshot


def test_diff_against_an_unknown_snapshot_is_400_on_baseline(api, db):
    assert_error(api.get("/api/diff/", {"baseline": 424242}), 400, field="baseline")


def test_snapshot_needs_a_name(api, db):
    assert_error(api.post("/api/snapshots/", {"name": "  "}, format="json"), 400, field="name")


# Tree


def test_tree_counts_leaves_and_invalid_leaves_per_folder(api, small):
    create_leaf(api, "compositional_skills/writing/freeform/jokes/knock_knock", task_description="Knock knock.")

    tree = api.get("/api/tree/").json()

    assert (tree["path"], tree["leaves"], tree["invalid"]) == ("", len(VALID) + 1, 1)
    assert [child["name"] for child in tree["children"]] == sorted(KINDS, key=str.lower)

    def folder(path):
        node = tree
        for part in path.split("/"):
            node = next(child for child in node["children"] if child["name"] == part)
        return node

    jokes = folder("compositional_skills/writing/freeform/jokes")
    assert (jokes["leaves"], jokes["invalid"], jokes["leaf"]) == (3, 1, None)
    assert [child["name"] for child in jokes["children"]] == ["knock_knock", "puns", "speech"]
    assert folder("compositional_skills")["leaves"] == 4
    assert (folder("knowledge")["leaves"], folder("foundational_skills")["invalid"]) == (1, 0)
    speech = folder(SPEECH)
    assert speech["leaf"] == {"id": leaf_id(api, SPEECH), "kind": "compositional_skills", "is_valid": True}
    assert speech["children"] == []


# Schema, docs, token


def test_openapi_schema_describes_the_taxonomy_api(api, db):
    response = api.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "LabWeb API"
    for path in (
        "/api/leaves/",
        "/api/leaves/{id}/",
        "/api/leaves/{id}/move/",
        "/api/leaves/{id}/history/{number}/",
        "/api/seeds/{id}/move/",
        "/api/documents/",
        "/api/imports/",
        "/api/import-jobs/{id}/",
        "/api/snapshots/",
        "/api/diff/",
        "/api/export/",
        "/api/tree/",
    ):
        assert path in schema["paths"], path
    assert set(schema["paths"]["/api/leaves/{id}/"]) >= {"get", "patch", "delete"}
    assert "put" not in schema["paths"]["/api/leaves/{id}/"]
    validate_schema(schema)  # a valid OpenAPI 3 document, so client generators accept it


def test_openapi_schema_needs_sign_in(db):
    response = APIClient().get("/api/schema/")
    assert response.status_code == 403
    assert yaml.safe_load(response.content)["error"]["message"]  # the error shape, in the schema's own format


def test_swagger_ui_renders_from_local_static_files_without_a_cdn(api, db):
    response = api.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html.lower() and "/api/schema/" in html
    for cdn in ("cdn", "unpkg", "jsdelivr"):
        assert cdn not in html.lower(), cdn
    scripts = re.findall(r'src="/static/([^"]+)"', html)
    assert any("swagger-ui-bundle" in src for src in scripts), scripts
    for src in scripts:
        assert finders.find(src), f"{src} is not a static file of this project"


def test_token_from_username_and_password_authenticates_api_requests(curator):
    anonymous = APIClient()
    response = anonymous.post("/api/auth/token/", {"username": "carla", "password": "pw-carla"}, format="json")
    assert response.status_code == 200, response.json()
    token = response.json()["token"]
    again = anonymous.post("/api/auth/token/", {"username": "carla", "password": "pw-carla"}, format="json")
    assert again.json()["token"] == token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/leaves/").status_code == 200
    created = client.post("/api/leaves/", {"path": "compositional_skills/via/token"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["created_by"] == "carla"
    assert LeafRevision.objects.get(path="compositional_skills/via/token").author == curator


def test_token_request_with_a_wrong_password_is_400(curator):
    response = APIClient().post("/api/auth/token/", {"username": "carla", "password": "wrong"}, format="json")
    assert_error(response, 400)
    assert "token" not in response.json()


def test_request_with_an_unknown_token_is_refused_with_error_shape(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    response = client.get("/api/leaves/")
    assert response.status_code in (401, 403)
    assert "Invalid token" in response.json()["error"]["message"]
