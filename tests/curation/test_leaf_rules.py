"""Rules a leaf's content must keep, checked in the services and shown beside the field in the page and API."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from curation import services
from curation.models import Document, Leaf, SeedExample
from tests.curation.test_api import add_skill_seeds, assert_error, create_leaf


@pytest.fixture
def page(curator) -> Client:
    client = Client()
    client.force_login(curator)
    return client


@pytest.mark.parametrize(
    "path",
    ["compositional_skills/writing/qna.yaml", "knowledge/science/planets/QNA.yaml", "knowledge/qna.yaml/planets"],
)
def test_a_leaf_path_naming_the_qna_file_is_refused_on_path_in_the_api(api, path):
    assert_error(api.post("/api/leaves/", {"path": path}, format="json"), 400, field="path", contains="qna.yaml")
    assert not Leaf.objects.exists()


def test_a_leaf_path_naming_the_qna_file_is_refused_beside_the_path_field_on_the_page(page):
    response = page.post(reverse("curation:leaf_create"), {"path": "compositional_skills/writing/jokes/qna.yaml"})
    assert response.status_code == 422
    assert "qna.yaml" in response.content.decode()
    assert not Leaf.objects.exists()


def test_moving_a_leaf_onto_a_qna_file_path_is_refused(api):
    leaf = create_leaf(api, "compositional_skills/writing/jokes")
    response = api.post(f"/api/leaves/{leaf['id']}/move/", {"path": "compositional_skills/jokes/qna.yaml"})
    assert_error(response, 400, field="path", contains="qna.yaml")
    assert Leaf.objects.get().path == "compositional_skills/writing/jokes"


@pytest.mark.parametrize("blank", [" ", "   \n\t", "\u3000"])
def test_a_whitespace_only_seed_question_is_refused_on_question_in_the_api(api, blank):
    leaf = create_leaf(api, "compositional_skills/writing/jokes")
    response = api.post("/api/seeds/", {"leaf": leaf["id"], "question": blank, "answer": "A."}, format="json")
    assert_error(response, 400, field="question", contains="whitespace")
    (seed,) = add_skill_seeds(api, leaf["id"], 1)
    response = api.patch(f"/api/seeds/{seed['id']}/", {"question": blank}, format="json")
    assert_error(response, 400, field="question", contains="whitespace")
    assert SeedExample.objects.get().question == "Question 0?"


def test_a_whitespace_only_question_of_a_knowledge_pair_is_refused_naming_the_pair(api):
    leaf = create_leaf(api, "knowledge/science/planets")
    pairs = [{"question": "Q?", "answer": "A."}, {"question": "  ", "answer": "A."}]
    response = api.post(
        "/api/seeds/", {"leaf": leaf["id"], "context": "C.", "questions_and_answers": pairs}, format="json"
    )
    assert_error(response, 400, field="questions_and_answers-1-question")
    assert not SeedExample.objects.exists()


def test_a_whitespace_only_seed_question_is_refused_beside_its_field_on_the_page(api, page):
    leaf = create_leaf(api, "compositional_skills/writing/jokes")
    (seed,) = add_skill_seeds(api, leaf["id"], 1)
    revision = Leaf.objects.get().revision
    response = page.post(
        reverse("curation:seed_update", args=[seed["id"]]), {"revision": revision, "question": "   ", "answer": "A."}
    )
    assert response.status_code == 422
    assert "only whitespace" in response.content.decode()
    assert SeedExample.objects.get().question == "Question 0?"
    assert Leaf.objects.get().revision == revision


def test_an_empty_seed_question_is_still_allowed_while_the_seed_is_being_written(api):
    leaf = create_leaf(api, "compositional_skills/writing/jokes")
    response = api.post("/api/seeds/", {"leaf": leaf["id"], "question": "", "answer": ""}, format="json")
    assert response.status_code == 201


def test_a_skills_leaf_refuses_a_document_on_leaf_in_the_api(api):
    leaf = create_leaf(api, "compositional_skills/writing/jokes")
    response = api.post("/api/documents/", {"leaf": leaf["id"], "name": "a.md", "content": "# A"}, format="json")
    assert_error(response, 400, field="leaf", contains="knowledge")
    assert not Document.objects.exists()


def test_a_skills_leaf_page_offers_no_upload_and_refuses_one_posted(api, page):
    skills = create_leaf(api, "compositional_skills/writing/jokes")
    knowledge = create_leaf(api, "knowledge/science/planets")
    html = page.get(reverse("curation:leaf_detail", args=[skills["id"]])).content.decode()
    assert 'id="add-document"' not in html and "take no source documents" in html
    assert 'id="add-document"' in page.get(reverse("curation:leaf_detail", args=[knowledge["id"]])).content.decode()
    response = page.post(
        reverse("curation:document_add", args=[skills["id"]]),
        {"revision": Leaf.objects.get(pk=skills["id"]).revision, "file": SimpleUploadedFile("a.md", b"# A")},
    )
    assert response.status_code == 422
    assert "only knowledge leaves take source documents" in response.content.decode()
    assert not Document.objects.exists()


def test_a_knowledge_leaf_still_takes_a_document_through_the_service(curator):
    leaf = services.leaf_create(path="knowledge/science/planets", user=curator)
    document = services.document_add(leaf=leaf, user=curator, expected_revision=None, name="a.md", content="# A")
    assert document.leaf_id == leaf.pk


def test_a_long_snapshot_name_is_shortened_in_the_diff_picker_and_kept_whole_in_its_title(page, curator):
    name = "before the review of " + "every poetry leaf " * 10
    services.snapshot_create(name=name, user=curator)
    html = page.get(reverse("curation:diff")).content.decode()
    assert f'title="{name.strip()}"' in html
    assert f">{name.strip()} (" not in html


@pytest.mark.parametrize("value", ["abc", "null", "9" * 40, "-1"])
def test_the_diff_page_refuses_a_bad_baseline_beside_the_picker(page, db, value):
    response = page.get(reverse("curation:diff"), {"baseline": value})
    assert response.status_code == 400
    assert 'data-field="baseline"' in response.content.decode()
