"""Hardening across the app: CSRF on every form and session write, sign-in attempts limited, upload limits,
secrets never shown or logged, and `check --deploy` clean with production settings."""

import logging
import re
import secrets

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLResolver, get_resolver
from rest_framework.test import APIClient

from labweb import throttle
from tests.test_api_roles import ENDPOINTS, send, state, world  # noqa: F401 (world: the fixture)
from tests.test_project import REPO, _manage

pytestmark = pytest.mark.django_db


def test_check_deploy_is_clean_with_production_settings():
    production = {
        "DEBUG": "0",
        "LABWEB_HTTPS": "1",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "labweb.example.com",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/labweb_settings_check",
    }
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **production)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    # The same check fails without the production switch: it is the switch that makes it clean.
    assert _manage("check", "--deploy", "--fail-level", "WARNING", **{**production, "LABWEB_HTTPS": "0"}).returncode


def test_every_post_form_in_the_templates_carries_a_csrf_token():
    forms = 0
    for template in REPO_TEMPLATES():
        text = template.read_text()
        for form in re.finditer(r"<form\b[^>]*>.*?</form>", text, re.S | re.I):
            opening = form.group(0)[: form.group(0).index(">")]
            if re.search(r"""method=["']?post""", opening, re.I):
                forms += 1
                assert "{% csrf_token %}" in form.group(0), f"{template}: a POST form without {{% csrf_token %}}"
    assert forms >= 20


def REPO_TEMPLATES():
    from pathlib import Path

    return [p for p in Path(REPO).rglob("*.html") if ".venv" not in p.parts and "staticfiles" not in p.parts]


def html_post_routes() -> list[str]:
    """Every URL outside /api/, with its path parameters filled in."""
    found = []

    def walk(patterns, prefix: str):
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif not route.startswith("api/"):
                url = re.sub(r"<(?:int:)?\w+>", "1", route)
                url = re.sub(r"<(?:str|slug|path):\w+>", "x", url)
                found.append("/" + re.sub(r"[\^$]|\\Z", "", url).replace("(?P", "("))

    walk(get_resolver().url_patterns, "")
    # The admin's regex routes (its app index, its views by object) are checked by the admin login page.
    return sorted({url for url in found if "(" not in url and "\\" not in url})


@pytest.fixture
def everyone(db):
    from django.contrib.auth.models import Group, User

    from labweb.roles import ROLES

    user = User.objects.create_user("all", password="pw-all", is_staff=True)
    user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in ROLES))
    return user


def test_session_writes_without_the_csrf_token_are_refused_everywhere(world, everyone):  # noqa: F811
    page = Client(enforce_csrf_checks=True)
    page.force_login(everyone)
    routes = html_post_routes()
    assert len(routes) >= 40
    before = state()
    for url in routes:
        response = page.post(url, {"name": "x", "action": "approve", "version": 1})
        assert response.status_code == 403 and b"CSRF" in response.content, (url, response.status_code)
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(everyone)
    writes = [e for e in ENDPOINTS if e.method != "GET"]
    for endpoint in writes:
        response = send(api, endpoint, world)
        assert response.status_code == 403, (str(endpoint), response.status_code, response.content[:200])
        assert "CSRF" in response.json()["error"]["message"], str(endpoint)
    assert state() == before
    # With the token the same session is let through (a refusal above is the token's absence, not the route).
    token = page.get("/review/").cookies["csrftoken"].value
    assert page.post("/review/undo/", {"csrfmiddlewaretoken": token}).status_code != 403


@pytest.fixture
def clear_failures():
    names = []

    def clear(address: str, username: str):
        names.append((address, username))
        throttle.login_succeeded(address, username)

    yield clear
    for address, username in names:
        throttle.login_succeeded(address, username)


def test_sign_in_is_refused_after_five_failures_from_one_address_and_name(curator, settings, clear_failures):
    clear_failures("127.0.0.1", "carla")
    clear_failures("10.0.0.9", "carla")
    client = Client()
    for _ in range(settings.LABWEB_LOGIN_MAX_FAILURES):
        response = client.post("/accounts/login/", {"username": "carla", "password": "wrong"})
        assert response.status_code == 200 and "Please enter a correct" in response.content.decode()
    response = client.post("/accounts/login/", {"username": "carla", "password": "pw-carla"})
    assert response.status_code == 200 and "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    token = APIClient().post("/api/auth/token/", {"username": "Carla", "password": "pw-carla"}, format="json")
    assert token.status_code == 429 and "Too many failed sign-ins" in token.json()["error"]["message"]
    admin = client.post("/admin/login/", {"username": "carla", "password": "pw-carla"})
    assert admin.status_code == 200 and "Too many failed sign-ins" in admin.content.decode()
    # Another address may still sign in as carla, and a success there clears that address's count.
    elsewhere = Client(REMOTE_ADDR="10.0.0.9")
    assert elsewhere.post("/accounts/login/", {"username": "carla", "password": "pw-carla"}).status_code == 302


def test_behind_a_proxy_failures_count_per_forwarded_client_not_per_proxy(curator, settings, clear_failures):
    settings.LABWEB_PROXY_COUNT = 1
    for address in ("203.0.113.7", "198.51.100.4", "127.0.0.1"):
        clear_failures(address, "carla")
    # Every request comes from the proxy (REMOTE_ADDR 127.0.0.1); the client may prepend whatever it likes.
    guesser = Client(HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.7")
    for _ in range(settings.LABWEB_LOGIN_MAX_FAILURES):
        guesser.post("/accounts/login/", {"username": "carla", "password": "wrong"})
    response = guesser.post("/accounts/login/", {"username": "carla", "password": "pw-carla"})
    assert "Too many failed sign-ins" in response.content.decode()
    spoofed = Client(HTTP_X_FORWARDED_FOR="10.1.1.1, 203.0.113.7")  # a new left-hand entry does not escape
    assert (
        "Too many failed sign-ins"
        in spoofed.post("/accounts/login/", {"username": "carla", "password": "pw-carla"}).content.decode()
    )
    colleague = Client(HTTP_X_FORWARDED_FOR="198.51.100.4")  # another client behind the same proxy
    assert colleague.post("/accounts/login/", {"username": "carla", "password": "pw-carla"}).status_code == 302
    settings.LABWEB_PROXY_COUNT = 0  # with no proxy trusted the header is the client's word and is ignored
    for _ in range(settings.LABWEB_LOGIN_MAX_FAILURES):
        Client(HTTP_X_FORWARDED_FOR="10.2.2.2").post("/accounts/login/", {"username": "carla", "password": "no"})
    renamed = Client(HTTP_X_FORWARDED_FOR="10.3.3.3")
    assert (
        "Too many failed sign-ins"
        in renamed.post("/accounts/login/", {"username": "carla", "password": "pw-carla"}).content.decode()
    )


def test_failed_token_requests_count_as_failed_sign_ins(curator, settings, clear_failures):
    clear_failures("127.0.0.1", "carla")
    api = APIClient()
    for _ in range(settings.LABWEB_LOGIN_MAX_FAILURES):
        assert api.post("/api/auth/token/", {"username": "carla", "password": "no"}, format="json").status_code == 400
    refused = api.post("/api/auth/token/", {"username": "carla", "password": "pw-carla"}, format="json")
    assert refused.status_code == 429


def test_teacher_api_keys_are_never_rendered_or_logged(operator, caplog):
    from generation.models import Teacher
    from generation.services.teachers import teacher_create

    key = "sk-" + secrets.token_hex(16)
    caplog.set_level(logging.DEBUG)
    client = Client()
    client.force_login(operator)
    teacher = teacher_create(user=operator, name="keyed", base_url="http://127.0.0.1:9/v1", model="m", api_key=key)
    api = APIClient()
    api.force_authenticate(operator)
    pages = [
        client.get("/generation/teachers/"),
        client.get(f"/generation/teachers/{teacher.pk}/"),
        api.get("/api/teachers/"),
        api.get(f"/api/teachers/{teacher.pk}/"),
        api.patch(f"/api/teachers/{teacher.pk}/", {"api_key": key + "x"}, format="json"),
        client.post(f"/generation/teachers/{teacher.pk}/", {"name": "keyed", "api_key": "bad\x00" + key}),
    ]
    assert Teacher.objects.get(pk=teacher.pk).has_api_key
    for response in pages:
        assert response.status_code in (200, 302, 400, 422), response.status_code
        assert key not in response.content.decode(errors="replace")
    assert key not in caplog.text


def test_every_upload_has_a_limit_and_a_clear_refusal(world, curator, operator, settings, tmp_path):  # noqa: F811
    from curation.services.documents import MAX_DOCUMENT_BYTES
    from tests.curation.jobs import run_here
    from tests.test_api_roles import targz

    curation_api, training_api = APIClient(), APIClient()
    curation_api.force_authenticate(curator)
    training_api.force_authenticate(operator)
    before = state()
    big = SimpleUploadedFile("big.md", b"#" * (MAX_DOCUMENT_BYTES + 1))
    document = curation_api.post("/api/documents/", {"leaf": world.knowledge_leaf, "file": big}, format="multipart")
    assert document.status_code == 400 and "MiB limit" in document.json()["error"]["message"]

    settings.LABWEB_IMPORT_MAX_TOTAL_BYTES = 1000
    archive = targz([(f"compositional_skills/a{i}/qna.yaml", b"x" * 600) for i in range(3)])
    imported = curation_api.post(
        "/api/imports/", {"archive": SimpleUploadedFile("t.tar.gz", archive)}, format="multipart"
    )
    job = run_here(curation_api, imported)  # read through by the job: refused there, the refusal on the job
    assert job["status"] == "failed" and "unpacks to more than" in job["error"]

    settings.LABWEB_TRAINING_UPLOAD_MAX_BYTES = 100
    line = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
    upload = training_api.post(
        "/api/training-uploads/", {"file": SimpleUploadedFile("big.jsonl", line * 5)}, format="multipart"
    )
    assert upload.status_code == 400 and upload.json()["error"]["message"]
    after = state()
    assert after[:5] == before[:5] and after[-1] == before[-1]  # no leaf, document or upload changed
