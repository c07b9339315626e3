"""Every GET endpoint of the API, every query parameter it declares, sent hostile values: no 5xx, ever, and
every refusal in the API's one error shape naming what was wrong.

The endpoints and their parameters come from the OpenAPI schema drf-spectacular builds (filter fields,
pagination cursors, declared parameters), so a new endpoint or filter is fuzzed without a new line here.
"""

import re

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tests.test_api_roles import world  # noqa: F401 (the fixture)

HOSTILE = [
    "abc",
    "null",
    "",
    " ",
    "-1",
    "0",
    "1.5",
    "9" * 40,
    "-" + "9" * 40,
    "x" * 5000,
    "a\x00b",
    "\x00",
    "%00",
    "unknown-choice",
    "2026-13-45T99:99",
    "true,false",
    "../../etc/passwd",
    "cD0x",  # base64 of "p=1": a cursor naming no position this API issued
    "!!!not-base64!!!",
    "\u202e\ufeffé",
]
# Which object of the world fills each path parameter, by the first segment under /api/.
PATH_OBJECT = {
    "leaves": "leaf",
    "seeds": "seed",
    "documents": "document",
    "imports": "record",
    "import-jobs": "import_job",
    "snapshots": "snapshot",
    "teachers": "teacher",
    "runs": "run",
    "work-items": "item",
    "samples": "sample",
    "training-jobs": "training_job",
    "checkpoints": "checkpoint",
    "datasets": "dataset",
    "evaluations": "evaluation",
    "review/items": "sample",
    "review/bulk": "job",
}
SKIP = {"/api/schema/"}  # serves the schema itself; its `format`/`lang` are drf-spectacular's, checked below


def get_operations() -> list[tuple[str, list[str]]]:
    """(path template, declared query parameter names) of every GET operation in the schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found = []
    for path, operations in schema["paths"].items():
        if "get" in operations and path not in SKIP:
            names = [p["name"] for p in operations["get"].get("parameters", []) if p["in"] == "query"]
            found.append((path, names))
    return found


OPERATIONS = get_operations()


def concrete(path: str, w) -> str:
    if "{id}" in path:
        parts = path.split("/")
        key = parts[2] if parts[2] in PATH_OBJECT else "/".join(parts[2:4])
        path = path.replace("{id}", str(getattr(w, PATH_OBJECT[key])))
    path = path.replace("{role}", "all")  # the file every dataset of the world has
    return re.sub(r"\{number\}", "1", path)


def assert_no_crash(response, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.content[:300])
    if response.status_code >= 400:
        body = response.json()
        assert body["error"]["message"], what
        assert body["errors"] and body["errors"][0] == body["error"], what


def test_the_schema_declares_the_parameters_users_send():
    declared = dict(OPERATIONS)
    assert {"kind", "is_valid", "q", "under", "paths", "version", "cursor"} <= set(declared["/api/leaves/"])
    assert {"run", "kind", "leaf_path", "cursor"} <= set(declared["/api/samples/"])
    assert "baseline" in declared["/api/diff/"]
    assert len(OPERATIONS) >= 20


@pytest.mark.parametrize(("path", "params"), OPERATIONS, ids=[path for path, _ in OPERATIONS])
def test_hostile_query_values_never_crash_and_refusals_name_the_parameter(path, params, world, curator):  # noqa: F811
    client = APIClient()
    client.force_authenticate(curator)
    url = concrete(path, world)
    for name in [*params, "unknown_parameter"]:
        for value in HOSTILE:
            response = client.get(url, {name: value})
            assert_no_crash(response, f"{url}?{name}={value[:40]!r}")
            if response.status_code == 400 and name != "unknown_parameter":
                fields = {error["field"] for error in response.json()["errors"]}
                assert name in fields, (url, name, value[:40], response.json())


def test_diff_refuses_a_baseline_that_is_not_a_snapshot_id(world, curator):  # noqa: F811
    client = APIClient()
    client.force_authenticate(curator)
    for value in ("abc", "null", "-1", "9" * 40, "1.5"):
        response = client.get("/api/diff/", {"baseline": value})
        assert response.status_code == 400, (value, response.status_code)
        assert response.json()["error"]["field"] == "baseline"
        assert "baseline" in response.json()["error"]["message"]
    missing = client.get("/api/diff/", {"baseline": "999999"})
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "baseline"
    assert client.get("/api/diff/", {"baseline": str(world.snapshot)}).status_code == 200


def test_an_address_under_the_api_that_names_no_endpoint_answers_in_the_error_shape(curator):
    client = APIClient()
    client.force_authenticate(curator)
    for url in ("/api/no-such-thing/", "/api/datasets/1/files/NOT-A-ROLE/"):
        response = client.get(url)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", url
        assert url in response.json()["error"]["message"]
    page = Client().get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
