"""The generation pages, through the Django test client."""

import pytest

from generation.services.teachers import teacher_create, teacher_ensure_default

pytestmark = pytest.mark.django_db


def offered_samples_per_leaf(client, operator) -> str:
    client.force_login(operator)
    page = client.get("/generation/runs/new/").content.decode()
    return page.split('name="samples_per_leaf"')[1].split('value="')[1].split('"')[0]


def test_a_first_run_on_the_embedded_cpu_teacher_offers_a_target_it_can_reach_in_minutes(client, operator):
    teacher_ensure_default()
    assert offered_samples_per_leaf(client, operator) == "2"


def test_a_run_on_a_teacher_server_offers_a_lab_sized_target(client, operator, curator):
    teacher_create(user=curator, name="A vLLM server", base_url="http://127.0.0.1:9/v1", model="m")
    assert offered_samples_per_leaf(client, operator) == "30"
