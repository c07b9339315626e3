"""The one API root lists the endpoints of every app, each link one that answers."""

from urllib.parse import urlparse


def test_api_root_lists_the_endpoints_of_every_app_and_each_link_answers(api):
    response = api.get("/api/")
    assert response.status_code == 200
    root = response.json()
    assert set(root) == {
        "leaves",
        "seeds",
        "documents",
        "imports",
        "import-jobs",
        "snapshots",
        "tree",
        "diff",
        "export",
        "teachers",
        "runs",
        "work-items",
        "samples",
        "training-jobs",
        "checkpoints",
        "training-uploads",
        "datasets",
        "evaluations",
        "review/items",
        "review/stats",
        "review/agreement",
    }
    for name, url in root.items():
        if name == "export":
            continue  # a download of the whole taxonomy; its own tests cover it
        assert api.get(urlparse(url).path).status_code == 200, name
