"""The whole OpenAPI schema, every operation and method, fuzzed by schemathesis against a live server.

Each operation gets a bounded number of generated requests, schema-valid ones and invalid ones, sent over HTTP
to `live_server` as a user holding every role (not staff: server-side paths and git clones stay refused). No
answer may be a server error, and every answer the schema describes must match it. Reads go first and deletes
last, so the world's objects are there for most of the run; path ids name the world's objects, so the
requests reach past the lookup into the handlers.
"""

import os

import hypothesis
import pytest
import requests
import schemathesis
from django.contrib.auth.models import Group, User
from hypothesis import HealthCheck, Phase
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from labweb.roles import ROLES
from tests.test_api_fuzz import PATH_OBJECT
from tests.test_api_roles import world  # noqa: F401 (the fixture)

EXAMPLES = 4  # per operation and mode: about 450 requests in all
ORDER = {"get": 0, "post": 1, "put": 2, "patch": 3, "delete": 4}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Answers in their own formats, described as such in the schema: the archive and the interactive docs.
NOT_JSON = {"/api/checkpoints/{id}/download/", "/api/docs/"}


def path_parameters(path: str, w) -> dict:
    parameters = {}
    if "{id}" in path:
        parts = path.split("/")
        key = parts[2] if parts[2] in PATH_OBJECT else "/".join(parts[2:4])
        parameters["id"] = getattr(w, PATH_OBJECT[key])
    if "{number}" in path:
        parameters["number"] = 1
    return parameters


@pytest.fixture
def fuzzer(db, queued):
    """Every role, no staff flag, signed in with a token."""
    user = User.objects.create_user("fuzz", password="pw-fuzz")
    user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in ROLES))
    return Token.objects.create(user=user).key


def test_every_operation_survives_generated_requests_and_answers_as_its_schema_says(
    live_server,
    world,  # noqa: F811
    fuzzer,
):
    session = requests.Session()
    session.headers["Authorization"] = f"Token {fuzzer}"
    # One connection a request: a kept-alive one holds a server thread, and its database session, past the test.
    session.headers["Connection"] = "close"
    raw = session.get(f"{live_server.url}/api/schema/", params={"format": "json"}, timeout=30)
    assert raw.status_code == 200, raw.content[:300]
    schema = schemathesis.openapi.from_dict(raw.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (ORDER.get(op.method.lower(), 9), op.path))
    assert len(operations) >= 70 and {op.method.lower() for op in operations} >= set(ORDER)
    if only := os.environ.get("FUZZ_ONLY"):  # to rerun one operation while fixing it: FUZZ_ONLY="GET /api/tree/"
        operations = [op for op in operations if only in op.label]
    failures: list[str] = []
    sent = 0

    def fuzz(operation, strategy):
        checks = CHECKS if operation.path not in NOT_JSON else [not_a_server_error]

        @hypothesis.given(case=strategy)
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def send(case):
            nonlocal sent
            sent += 1
            response = case.call(base_url=live_server.url, session=session, timeout=30)
            case.validate_response(response, checks=checks)

        send()

    for operation in operations:
        fixed = path_parameters(operation.path, world)
        # Invalid requests need something to make invalid: a query parameter or a body (path ids are fixed).
        negatable = len(operation.query) > 0 or len(operation.body) > 0
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)[: 2 if negatable else 1]:
            try:
                fuzz(operation, operation.as_strategy(generation_mode=mode, path_parameters=fixed))
            except (Exception, BaseExceptionGroup) as error:  # schemathesis raises a group of its findings
                failures.append(f"{operation.label} ({mode}): {str(error)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert sent >= len(operations) * EXAMPLES // 2
