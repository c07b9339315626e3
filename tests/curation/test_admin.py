"""The Django admin shows the taxonomy but cannot change it: an edit there would record no revision, skip
validation and leave the content hash stale."""

import pytest
from django.test import Client

from curation import services
from curation.models import Document, Leaf, LeafRevision, SeedExample
from tests.conftest import DEMO


@pytest.fixture
def admin_client(django_user_model, curator) -> Client:
    # The demo taxonomy: skills and knowledge leaves, seeds, and a knowledge leaf's document.
    services.taxonomy_import(source=services.ImportSource.directory(DEMO), user=curator, from_shell=True)
    assert Document.objects.exists()
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-root"))
    return client


def taxonomy_state() -> tuple:
    return (
        list(Leaf.objects.values_list("path", "revision", "is_valid", "content_hash", "task_description")),
        list(SeedExample.objects.order_by("pk").values_list("question", "answer")),
        list(Document.objects.values_list("name", "content")),
        LeafRevision.objects.count(),
    )


@pytest.mark.parametrize("model", ["leaf", "seedexample", "document"])
def test_admin_shows_taxonomy_rows_but_cannot_add_change_or_delete_them(admin_client, model):
    row = {"leaf": Leaf, "seedexample": SeedExample, "document": Document}[model].objects.first()
    base = f"/admin/curation/{model}/"
    before = taxonomy_state()

    assert admin_client.get(base).status_code == 200
    view = admin_client.get(f"{base}{row.pk}/change/")
    assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
    assert admin_client.get(f"{base}add/").status_code == 403
    edits = {"path": "compositional_skills/renamed", "is_valid": "", "question": "q", "name": "b.md", "content": "#"}
    assert admin_client.post(f"{base}{row.pk}/change/", edits).status_code == 403
    assert admin_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    admin_client.post(base, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})

    assert taxonomy_state() == before
