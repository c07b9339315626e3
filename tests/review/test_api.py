"""The review API as a script uses it: the queue with filters and cursor, decisions with If-Match, bulk, stats."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from review.models import Decision, ReviewItem

pytestmark = pytest.mark.django_db
ITEMS = "/api/review/items/"


@pytest.fixture
def api_reviewer(reviewer) -> APIClient:
    client = APIClient()
    client.force_authenticate(reviewer)
    return client


def all_pages(client, url) -> list[dict]:
    rows = []
    while url:
        body = client.get(url).json()
        rows += body["results"]
        url = body["next"]
    return rows


def test_queue_pages_by_cursor_cover_every_sample_once_in_order(make_samples, api_reviewer):
    make_samples(2)
    rows = all_pages(api_reviewer, f"{ITEMS}?page_size=7&sort=-score")
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    keys = [(r["score"], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    by_leaf = all_pages(api_reviewer, f"{ITEMS}?page_size=4&sort=leaf")
    assert [(r["leaf_path"], r["id"]) for r in by_leaf] == sorted((r["leaf_path"], r["id"]) for r in by_leaf)


def test_previous_cursor_walks_back_to_the_same_rows(make_samples, api_reviewer):
    make_samples(2)
    first = api_reviewer.get(f"{ITEMS}?page_size=5&sort=score").json()
    second = api_reviewer.get(first["next"]).json()
    back = api_reviewer.get(second["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]
    assert first["previous"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("path=compositional_skills/writing", 20),
        ("path=compositional_skills/writing/poems", 10),
        ("path=compositional_skills/writ", 0),  # a prefix of a folder name is not a branch
        ("score_min=2&score_max=2", 10),
        ("kind=knowledge", 0),
        ("teacher=teacher-model", 30),
        ("duplicate=yes", 0),
        ("q=Question", 30),
        ("state=approved", 0),
        ("state=any", 30),
    ],
)
def test_queue_filters(make_samples, api_reviewer, query, expected):
    make_samples(2)
    assert len(all_pages(api_reviewer, f"{ITEMS}?page_size=200&{query}")) == expected


def test_full_text_search_finds_words_of_the_answer(make_samples, api_reviewer):
    make_samples(1)
    item = ReviewItem.objects.order_by("pk").first()
    word = item.sample.response.split()[1].rstrip(".")  # "<n>:" of "Answer <n>: ..."
    found = {r["id"] for r in all_pages(api_reviewer, f"{ITEMS}?q=answer+{word}")}
    assert item.pk in found


def test_queue_page_neither_counts_nor_skips_rows(make_samples, api_reviewer, django_assert_max_num_queries):
    make_samples(2)
    first = api_reviewer.get(f"{ITEMS}?page_size=5&sort=score&path=compositional_skills").json()
    with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(6):
        response = api_reviewer.get(first["next"])
    assert response.status_code == 200
    sql = " ".join(q["sql"] for q in queries.captured_queries).upper()
    assert "COUNT(" not in sql and "OFFSET" not in sql


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=lost", "state"),
        ("sort=random", "sort"),
        ("run=x", "run"),
        ("score_min=high", "score_min"),
        ("cursor=bogus", "cursor"),
    ],
)
def test_bad_queue_parameters_name_their_field(make_samples, api_reviewer, query, field):
    make_samples(1)
    response = api_reviewer.get(f"{ITEMS}?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_decide_with_if_match_and_a_stale_etag_gets_412_naming_the_decision(
    make_samples, api_reviewer, second_reviewer
):
    make_samples(1)
    pk = ReviewItem.objects.order_by("pk").first().pk
    detail = api_reviewer.get(f"{ITEMS}{pk}/")
    etag = detail["ETag"]
    assert etag == '"1"' and detail.json()["state"] == "pending"
    decided = api_reviewer.post(
        f"{ITEMS}{pk}/decide/", {"action": "reject", "reason": "unclear"}, format="json", headers={"If-Match": etag}
    )
    assert decided.status_code == 200 and decided["ETag"] == '"2"'
    assert decided.json()["decision"]["reason"] == "unclear"
    other = APIClient()
    other.force_authenticate(second_reviewer)
    stale = other.post(f"{ITEMS}{pk}/decide/", {"action": "approve"}, format="json", headers={"If-Match": etag})
    assert stale.status_code == 412
    assert "rene rejected it (unclear question)" in stale.json()["error"]["message"]
    in_body = other.post(f"{ITEMS}{pk}/decide/", {"action": "approve", "version": 1}, format="json")
    assert in_body.status_code == 409 and in_body.json()["error"]["field"] == "version"
    assert Decision.objects.count() == 1


def test_edit_keeps_the_original_and_returns_the_word_diff(make_samples, api_reviewer):
    make_samples(1)
    item = ReviewItem.objects.order_by("pk").first()
    new_answer = item.sample.response.replace("Answer", "Reply", 1)
    response = api_reviewer.post(
        f"{ITEMS}{item.pk}/edit/",
        {"question": item.sample.question, "response": new_answer, "version": 1},
        format="json",
    )
    body = response.json()
    assert response.status_code == 200 and body["state"] == "edited"
    assert body["original_response"] == item.sample.response and body["response"] == new_answer
    assert ["removed", "Answer "] in body["diff"]["response"] and ["added", "Reply "] in body["diff"]["response"]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("10000000/decide/", {"action": "approve", "version": 1}, 404, None),
        ("{pk}/decide/", {"action": "reject", "reason": "meh", "version": 1}, 400, "reason"),
        ("{pk}/decide/", {"action": "maybe", "version": 1}, 400, "action"),
        ("{pk}/decide/", {"action": "approve"}, 400, "version"),
        ("{pk}/edit/", {"question": "", "response": "x", "version": 1}, 400, "question"),
    ],
    ids=["gone", "unknown-reason", "unknown-action", "no-version", "empty-edit"],
)
def test_bad_decisions_get_the_one_error_shape_and_change_nothing(
    make_samples, api_reviewer, path, body, status, field
):
    make_samples(1)
    pk = ReviewItem.objects.order_by("pk").first().pk
    response = api_reviewer.post(ITEMS + path.format(pk=pk), body, format="json")
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["message"] and response.json()["errors"][0] == error
    if field:
        assert error["field"] == field
    assert not Decision.objects.exists()


def test_bulk_by_filter_preview_start_poll_and_undo(
    make_samples, api_reviewer, eager, django_capture_on_commit_callbacks
):
    make_samples(2)
    filters = {"path": "compositional_skills/writing", "score_min": 2}
    preview = api_reviewer.post(
        "/api/review/bulk/preview/", {"action": "approve", "filters": filters}, format="json"
    ).json()
    assert preview["count"] == 13  # samples 11-30 score 1 + n % 3: 13 of them score 2 or 3
    with django_capture_on_commit_callbacks(execute=True):
        started = api_reviewer.post(
            "/api/review/bulk/", {"action": "approve", "filters": filters, "expected": preview["count"]}, format="json"
        )
    assert started.status_code == 202
    job = api_reviewer.get(f"/api/review/bulk/{started.json()['id']}/").json()
    assert (job["status"], job["done"], job["percent"]) == ("done", 13, 100)
    stats = api_reviewer.get("/api/review/stats/?path=compositional_skills/writing").json()
    assert (stats["total"]["approved"], stats["total"]["pending"], stats["total"]["acceptance_rate"]) == (13, 7, 1.0)
    with django_capture_on_commit_callbacks(execute=True):
        undone = api_reviewer.post(f"/api/review/bulk/{job['id']}/undo/")
    assert undone.status_code == 202
    assert api_reviewer.get(f"/api/review/bulk/{job['id']}/").json()["status"] == "undone"
    assert api_reviewer.get("/api/review/stats/").json()["total"]["pending"] == 30


def test_bulk_that_matches_nothing_and_a_claim_with_nothing_left_are_clear_errors(make_samples, api_reviewer):
    make_samples(1)
    nothing = api_reviewer.post(
        "/api/review/bulk/preview/", {"action": "approve", "filters": {"path": "none"}}, format="json"
    )
    assert nothing.status_code == 400 and "nothing to decide" in nothing.json()["error"]["message"]
    claimed = api_reviewer.post("/api/review/claim/", {"size": 200}, format="json")
    assert claimed.status_code == 200 and len(claimed.json()["ids"]) == 15
    from tests.conftest import _user

    other = APIClient()
    other.force_authenticate(_user("ruth", "reviewer"))
    empty = other.post("/api/review/claim/", {"size": 5}, format="json")
    assert empty.status_code == 409 and "Nothing is left" in empty.json()["error"]["message"]


def test_undo_in_order_through_the_api(make_samples, api_reviewer):
    make_samples(1)
    ids = list(ReviewItem.objects.order_by("pk").values_list("pk", flat=True)[:3])
    for pk in ids:
        api_reviewer.post(f"{ITEMS}{pk}/decide/", {"action": "approve", "version": 1}, format="json")
    undone = api_reviewer.post("/api/review/undo/", {"steps": 2}, format="json").json()
    assert [d["item"] for d in undone] == [ids[2], ids[1]]
    assert list(ReviewItem.objects.filter(pk__in=ids).order_by("pk").values_list("state", flat=True)) == [
        "approved",
        "pending",
        "pending",
    ]
    api_reviewer.post("/api/review/undo/", {"steps": 1}, format="json")
    again = api_reviewer.post("/api/review/undo/", {"steps": 1}, format="json")
    assert again.status_code == 400 and again.json()["error"]["field"] == "steps"


def test_agreement_per_leaf_and_pair(make_samples, reviewer, second_reviewer, api_reviewer):
    from review.services.decisions import sample_decide

    make_samples(1, required=2)
    items = list(ReviewItem.objects.order_by("pk"))
    for index, item in enumerate(items):
        sample_decide(sample_id=item.pk, reviewer=reviewer, action="approve", expected_version=1)
        second = "reject" if index % 3 == 0 else "approve"
        sample_decide(sample_id=item.pk, reviewer=second_reviewer, action=second, expected_version=2)
    body = api_reviewer.get("/api/review/agreement/").json()
    assert body["items"] == 15
    assert body["pairs"][0]["reviewers"] == ["rene", "rita"] and body["pairs"][0]["items"] == 15
    # rene always approves: kappa is 0 (agreement no better than chance).
    assert body["pairs"][0]["cohen_kappa"] == pytest.approx(0.0)
    assert {row["measure"] for row in body["leaves"]} == {"cohen_kappa"}


def test_openapi_schema_lists_the_review_api(api_reviewer):
    schema = api_reviewer.get("/api/schema/", headers={"Accept": "application/json"}).content.decode()
    for path in (
        "/api/review/items/",
        "/api/review/items/{id}/decide/",
        "/api/review/bulk/{id}/undo/",
        "/api/review/claim/",
        "/api/review/stats/",
        "/api/review/agreement/",
        "/api/review/undo/",
    ):
        assert path in schema


def test_the_lean_queue_page_says_what_the_item_serializer_says(make_samples, api_reviewer, reviewer):
    from review.api.serializers import ReviewItemSerializer
    from review.services.decisions import sample_decide

    make_samples(1)
    first, second = ReviewItem.objects.order_by("pk").values_list("pk", flat=True)[:2]
    sample_decide(
        sample_id=first, reviewer=reviewer, action="edit", expected_version=1, question="Edited?", response="Edited."
    )
    sample_decide(sample_id=second, reviewer=reviewer, action="reject", expected_version=1)
    ReviewItem.objects.filter(pk=ReviewItem.objects.filter(state="pending").order_by("pk")[0].pk).update(
        claimed_by=reviewer, claimed_until="2030-01-01T00:00:00Z"
    )
    rows = all_pages(api_reviewer, f"{ITEMS}?state=any&page_size=7")
    items = ReviewItem.objects.select_related("sample").order_by("pk")
    assert rows == ReviewItemSerializer(items, many=True).data
    assert {row["state"] for row in rows} == {"pending", "edited", "rejected"} and rows[0]["edited"]
    assert any(row["claimed_until"] for row in rows) and any(row["decided_at"] for row in rows)
