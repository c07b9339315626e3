"""Teacher settings a teacher cannot work within are refused, through the API and the page alike."""

import pytest
from rest_framework.test import APIClient

from generation.models import Teacher

pytestmark = pytest.mark.django_db

NEW = {"name": "vLLM", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}


@pytest.mark.parametrize("field", ["timeout_seconds", "max_tokens", "context_tokens"])
@pytest.mark.parametrize("value", [0, -5])
def test_the_api_refuses_a_teacher_limit_of_zero_or_less_naming_the_field(operator, field, value):
    api = APIClient()
    api.force_authenticate(operator)
    response = api.post("/api/teachers/", {**NEW, field: value}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not Teacher.objects.exists()


@pytest.mark.parametrize("field", ["timeout_seconds", "max_tokens", "context_tokens"])
def test_the_teacher_page_shows_a_zero_limit_refused_beside_its_field(client, operator, field):
    client.force_login(operator)
    form = {**NEW, "temperature": 0.7, "top_p": 1, "max_tokens": 512, "max_concurrency": 1}
    form |= {"timeout_seconds": 60, "context_tokens": 2048, field: 0}
    response = client.post("/generation/teachers/new/", form)
    assert response.status_code == 422
    page = response.content.decode()
    errors = page.split(f'id="id_{field}_errors"')[1].split("</div>")[0]
    assert "more than 0" in errors
    assert not Teacher.objects.exists()


def test_an_edit_to_a_zero_timeout_is_refused_and_the_teacher_keeps_its_own(client, operator, curator):
    from generation.services.teachers import teacher_create

    teacher = teacher_create(user=curator, **NEW, timeout_seconds=30)
    api = APIClient()
    api.force_authenticate(operator)
    response = api.patch(f"/api/teachers/{teacher.pk}/", {"timeout_seconds": 0}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "timeout_seconds"
    teacher.refresh_from_db()
    assert teacher.timeout_seconds == 30


def test_the_teacher_page_keeps_the_answer_format_it_was_set_to(client, operator):
    from generation.services.teachers import teacher_create

    teacher = teacher_create(user=operator, **NEW, answer_format="json_schema")
    client.force_login(operator)
    page = client.get(f"/generation/teachers/{teacher.pk}/").content.decode()
    assert 'name="answer_format"' in page and 'value="json_schema" selected' in page
    form = {**NEW, "temperature": 0.7, "top_p": 1, "max_tokens": 512, "max_concurrency": 1}
    form |= {"timeout_seconds": 60, "context_tokens": 2048, "answer_format": "json_schema", "name": "renamed"}
    assert client.post(f"/generation/teachers/{teacher.pk}/", form).status_code == 302
    teacher.refresh_from_db()
    assert (teacher.name, teacher.answer_format, teacher.effective_answer_format) == (
        "renamed",
        "json_schema",
        "json_schema",
    )


def test_the_api_takes_replicas_and_shows_every_endpoint_with_its_state(operator):
    api = APIClient()
    api.force_authenticate(operator)
    replicas = [{"base_url": "http://127.0.0.1:10/v1", "max_concurrency": 16}, {"base_url": "http://127.0.0.1:11/v1"}]
    response = api.post("/api/teachers/", {**NEW, "max_concurrency": 4, "replicas": replicas}, format="json")
    assert response.status_code == 201, response.json()
    body = api.get(f"/api/teachers/{response.json()['id']}/").json()
    assert body["replicas"] == [replicas[0], {**replicas[1], "max_concurrency": 8}]
    assert [(e["base_url"], e["max_concurrency"], e["state"], e["in_flight"]) for e in body["endpoints"]] == [
        ("http://127.0.0.1:9/v1", 4, "up", 0),
        ("http://127.0.0.1:10/v1", 16, "up", 0),
        ("http://127.0.0.1:11/v1", 8, "up", 0),
    ]
    assert Teacher.objects.get().total_concurrency == 28


@pytest.mark.parametrize(
    "replica, says",
    [
        ({"base_url": "ftp://elsewhere"}, "http://"),
        ({"base_url": "http://127.0.0.1:9/v1/"}, "repeats"),
        ({"base_url": "http://127.0.0.1:10/v1", "max_concurrency": 0}, "greater than or equal to 1"),
    ],
)
def test_the_api_refuses_a_bad_replica_naming_the_field(operator, replica, says):
    api = APIClient()
    api.force_authenticate(operator)
    response = api.post("/api/teachers/", {**NEW, "replicas": [replica]}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"].startswith("replicas") and says in str(error), error
    assert not Teacher.objects.exists()


def test_the_teacher_form_takes_replicas_one_a_line_and_shows_them_again(client, operator):
    client.force_login(operator)
    form = {**NEW, "temperature": 0.7, "top_p": 1, "max_tokens": 512, "max_concurrency": 2}
    form |= {"timeout_seconds": 60, "context_tokens": 2048}
    refused = client.post("/generation/teachers/new/", {**form, "replicas": "http://127.0.0.1:10/v1 many"})
    assert refused.status_code == 422
    assert "Line 1" in refused.content.decode().split('id="id_replicas_errors"')[1].split("</div>")[0]
    saved = client.post("/generation/teachers/new/", {**form, "replicas": "http://127.0.0.1:10/v1 6\n\nhttp://h:1/v1"})
    assert saved.status_code == 302
    teacher = Teacher.objects.get()
    assert teacher.replicas == [
        {"base_url": "http://127.0.0.1:10/v1", "max_concurrency": 6},
        {"base_url": "http://h:1/v1", "max_concurrency": 8},
    ]
    edit = client.get(f"/generation/teachers/{teacher.pk}/").content.decode()
    assert "http://127.0.0.1:10/v1 6\nhttp://h:1/v1 8" in edit
    listed = client.get("/generation/teachers/").content.decode()
    assert 'data-endpoint="http://h:1/v1"' in listed


@pytest.mark.parametrize(
    ("mode", "shown", "note"),
    [
        ("follow", "structured (json_schema)", "The server held its answer to a JSON schema"),
        ("ignore", "text formats", "The server ignored the JSON schema"),
    ],
)
def test_a_teacher_made_on_the_form_shows_what_the_probe_found_on_the_teacher_pages(
    client, operator, teacher_server, script, mode, shown, note
):
    script.json_schema = mode
    client.force_login(operator)
    form = {**NEW, "base_url": teacher_server.url, "temperature": 0.7, "top_p": 1, "max_tokens": 512}
    form |= {"max_concurrency": 1, "timeout_seconds": 60, "context_tokens": 2048, "answer_format": "auto"}
    assert client.post("/generation/teachers/new/", form).status_code == 302
    assert script.requests == 1  # the probe: one short question, once
    teacher = Teacher.objects.get()
    row = client.get("/generation/teachers/").content.decode().split(f'data-teacher-notes="{teacher.pk}"')[1]
    row = row.split("</tr>")[0]
    assert f'data-answer-format="{teacher.effective_answer_format}">{shown}<' in row and note in row
    edit = client.get(f"/generation/teachers/{teacher.pk}/").content.decode()
    assert f"The probe: {note}" in edit
