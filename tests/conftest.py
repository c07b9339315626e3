from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

REPO = Path(__file__).resolve().parent.parent
# 426 real qna.yaml files from instructlab/taxonomy (Apache-2.0; README and LICENSE beside them).
CORPUS = REPO / "tests" / "fixtures" / "instructlab-taxonomy"
DEMO = REPO / "curation" / "demo" / "taxonomy"


@pytest.fixture(scope="session")
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the qna.yaml corpus is missing at {CORPUS}"
    return CORPUS


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The production hasher costs ~0.2 s a user; role fixtures make several per test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _user(username: str, *roles: str, **extra) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, **extra)
    for role in roles:
        # get_or_create: a transactional test elsewhere may have flushed the groups the migration made.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def curator(db) -> User:
    return _user("carla", "curator")


@pytest.fixture
def reviewer(db) -> User:
    return _user("rene", "reviewer")


@pytest.fixture
def operator(db) -> User:
    return _user("otto", "operator")


@pytest.fixture
def outsider(db) -> User:
    """Signed in, but holds no role."""
    return _user("olga")


@pytest.fixture
def staff_curator(db) -> User:
    return _user("stefan", "curator", is_staff=True)


@pytest.fixture
def api(curator) -> APIClient:
    client = APIClient()
    client.force_authenticate(curator)
    return client


@pytest.fixture
def imported(db, corpus, curator):
    """The whole corpus imported, as a curator would."""
    from curation.services import ImportSource, taxonomy_import

    return taxonomy_import(source=ImportSource.directory(corpus), user=curator, from_shell=True)


@pytest.fixture
def broker(settings):
    """The Redis database the Celery app talks to, emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def celery_mode(settings, broker):
    """`celery_mode(eager=True)` runs queued tasks at once in this process (as CELERY_TASK_ALWAYS_EAGER
    does); `eager=False` sends them to Redis, where no worker takes them, so the test drives the items."""
    from labweb.celery import app

    before = app.conf.task_always_eager

    def switch(*, eager: bool) -> None:
        settings.CELERY_TASK_ALWAYS_EAGER = eager
        app.conf.task_always_eager = eager

    yield switch
    app.conf.task_always_eager = before


@pytest.fixture
def eager(celery_mode):
    celery_mode(eager=True)


@pytest.fixture
def queued(celery_mode):
    celery_mode(eager=False)
