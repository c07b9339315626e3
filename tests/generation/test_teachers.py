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
