"""A deleted leaf keeps its history: its history and revision pages and API answer, say it is deleted, and the
diff and the deleted-leaves list link to it."""

import pytest
from django.test import Client
from django.urls import reverse

from curation.models import Leaf
from tests.curation.jobs import run_here
from tests.curation.test_api import add_skill_seeds, assert_error, create_leaf, post_archive, targz
from tests.support.qna import POEMS


@pytest.fixture
def page(curator) -> Client:
    client = Client()
    client.force_login(curator)
    return client


@pytest.fixture
def deleted(api) -> dict:
    """A leaf edited, snapshotted, moved, then deleted through the API."""
    leaf = create_leaf(api, "compositional_skills/writing/jokes", task_description="Tell a joke.")
    add_skill_seeds(api, leaf["id"], 2)
    snapshot = api.post("/api/snapshots/", {"name": "before"}, format="json")
    assert snapshot.status_code == 201
    moved = api.post(f"/api/leaves/{leaf['id']}/move/", {"path": "compositional_skills/humour/jokes"}, format="json")
    assert moved.status_code == 200
    assert api.delete(f"/api/leaves/{leaf['id']}/").status_code == 204
    assert not Leaf.objects.exists()
    path = "compositional_skills/humour/jokes"
    return {"id": leaf["id"], "path": path, "old_path": leaf["path"], "snapshot": snapshot.json()["id"]}


def test_a_deleted_leafs_history_lists_every_revision_up_to_the_deletion_in_the_api(api, deleted):
    response = api.get(f"/api/leaves/{deleted['id']}/history/")
    assert response.status_code == 200
    actions = [r["action"] for r in response.json()]
    assert actions == ["delete", "move", "update", "update", "create"]
    assert response.json()[-1]["path"] == deleted["old_path"]  # before the move: one history across paths
    revision = api.get(f"/api/leaves/{deleted['id']}/history/3/")
    assert revision.status_code == 200
    assert revision.json()["snapshot"]["qna"]["task_description"] == "Tell a joke."
    assert_error(api.get(f"/api/leaves/{deleted['id']}/history/99/"), 404)


def test_a_deleted_leaf_itself_is_410_gone_naming_its_history(api, deleted):
    error = assert_error(api.get(f"/api/leaves/{deleted['id']}/"), 410, contains="was deleted")
    assert f"/api/leaves/{deleted['id']}/history/" in error["message"]
    assert error["path"] == deleted["path"]
    assert_error(api.get("/api/leaves/999999/history/"), 404)


def test_a_deleted_leafs_history_page_says_it_is_deleted_and_opens_its_revisions(page, deleted, curator):
    response = page.get(reverse("curation:leaf_history", args=[deleted["id"]]))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="leaf-deleted"' in html and f"by {curator.username}" in html
    assert reverse("curation:leaf_revision", args=[deleted["id"], 1]) in html
    assert f'href="{reverse("curation:leaf_detail", args=[deleted["id"]])}"' not in html
    revision = page.get(reverse("curation:leaf_revision", args=[deleted["id"], 1]))
    assert revision.status_code == 200
    assert 'id="leaf-deleted"' in revision.content.decode() and "Tell a joke." in revision.content.decode()
    assert page.get(reverse("curation:leaf_detail", args=[deleted["id"]])).status_code == 404


def test_the_diff_links_a_removed_leaf_to_its_history(page, api, deleted):
    html = page.get(reverse("curation:diff"), {"baseline": deleted["snapshot"]}).content.decode()
    removed = html[html.index('id="diff-removed"') :]
    assert reverse("curation:leaf_history", args=[deleted["id"]]) in removed
    assert deleted["old_path"] in removed


def test_the_deleted_leaves_list_links_each_deleted_leaf_to_its_history(page, api, deleted, curator):
    alive = create_leaf(api, "compositional_skills/writing/poems")
    html = page.get(reverse("curation:deleted_list")).content.decode()
    assert f'href="{reverse("curation:leaf_history", args=[deleted["id"]])}"' in html
    assert deleted["path"] in html and alive["path"] not in html
    assert 'id="deleted-link"' in page.get(reverse("curation:tree")).content.decode()


def test_a_leaf_removed_by_a_prune_import_keeps_a_reachable_history(page, api):
    first = run_here(api, post_archive(api, targz([("compositional_skills/poems/qna.yaml", POEMS)])))
    assert first["status"] == "succeeded", first
    poems = Leaf.objects.get(path="compositional_skills/poems").pk
    # The prune removes the only leaf there was: every leaf, which an import must be told it may do.
    pruned = post_archive(
        api, targz([("compositional_skills/verses/qna.yaml", POEMS)]), prune=True, allow_remove_all=True
    )
    assert run_here(api, pruned)["import_record"]["removed"] == 1
    assert [r["action"] for r in api.get(f"/api/leaves/{poems}/history/").json()] == ["delete", "import"]
    assert 'id="leaf-deleted"' in page.get(reverse("curation:leaf_history", args=[poems])).content.decode()


def test_a_new_leaf_at_a_deleted_leafs_path_has_a_history_of_its_own(api, deleted):
    again = create_leaf(api, deleted["path"])
    assert again["id"] != deleted["id"]
    assert [r["action"] for r in api.get(f"/api/leaves/{again['id']}/history/").json()] == ["create"]
    assert len(api.get(f"/api/leaves/{deleted['id']}/history/").json()) == 5
