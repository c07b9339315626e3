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


@pytest.mark.django_db(transaction=True)
def test_the_samples_page_counts_up_to_its_cap_and_then_says_more(eager, teacher, curator, demo, monkeypatch):
    from django.test import Client

    from curation.models import Leaf
    from generation.models import Sample
    from generation.services.runs import run_create
    from generation.views import samples

    leaves = [leaf.pk for leaf in Leaf.objects.filter(kind="compositional_skills")[:2]]
    run = run_create(teacher=teacher, user=curator, scope="selected", leaf_ids=leaves, samples_per_leaf=2)
    made = Sample.objects.filter(run=run).count()
    assert made >= 3
    client = Client()
    client.force_login(curator)
    monkeypatch.setattr(samples, "COUNT_UP_TO", made)
    page = client.get("/generation/samples/", {"run": run.pk}).content.decode()
    assert f"{made} samples" in page and "More than" not in page
    monkeypatch.setattr(samples, "COUNT_UP_TO", made - 1)
    page = client.get("/generation/samples/", {"run": run.pk}).content.decode()
    assert f"More than {made - 1} samples" in page


@pytest.mark.django_db(transaction=True)
def test_a_first_run_on_the_embedded_teacher_says_plainly_what_quality_to_expect(queued, client, curator, demo):
    from django.contrib.auth.models import Group

    from generation.services.runs import run_create
    from tests.support.sdg import HAIKU, closed_port_url

    embedded = teacher_ensure_default()
    curator.groups.add(Group.objects.get(name="operator"))
    client.force_login(curator)
    form = client.get("/generation/runs/new/").content.decode()
    warning = form.split('id="teacher-quality">')[1].split("</p>")[0]
    assert "SmolLM2-135M-Instruct, a 135-million-parameter model" in warning and "not training data" in warning

    leaves = [demo[HAIKU].pk]
    run = run_create(teacher=embedded, user=curator, scope="selected", leaf_ids=leaves, samples_per_leaf=2)
    head = client.get(f"/generation/runs/{run.pk}/").content.decode().split('id="run-head"')[1].split("</header>")[0]
    assert 'id="teacher-quality"' in head and "135-million-parameter" in head  # above the log, however long

    server = teacher_create(user=curator, name="A vLLM server", base_url=closed_port_url(), model="m")
    run = run_create(teacher=server, user=curator, scope="selected", leaf_ids=leaves, samples_per_leaf=2)
    assert 'id="teacher-quality"' not in client.get(f"/generation/runs/{run.pk}/").content.decode()
