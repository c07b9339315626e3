import uuid

import pytest

from generation.sdg.teachers import CachedTeacher, OpenAITeacher, RetryPolicy
from tests.support.sdg import MemoryCache
from tests.support.teacher_server import TeacherServer

FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.001, max_delay=0.01)


@pytest.fixture
def teacher_server():
    with TeacherServer() as server:
        yield server


@pytest.fixture
def script(teacher_server):
    return teacher_server.script


@pytest.fixture
def memory_cache() -> MemoryCache:
    return MemoryCache()


@pytest.fixture
def make_teacher(teacher_server, memory_cache):
    """A cached OpenAI teacher on the scripted server. Each gets a model name of its own, because the
    in-flight limit is shared per (URL, model) across the process and must not leak between tests."""

    def make(*, cache: MemoryCache | None = None, model: str | None = None, **options) -> CachedTeacher:
        options.setdefault("retry", FAST_RETRY)
        options.setdefault("timeout", 10.0)
        client = OpenAITeacher(
            base_url=teacher_server.url, model=model or f"scripted-{uuid.uuid4().hex[:8]}", **options
        )
        cache = cache or memory_cache
        return CachedTeacher(teacher=client, lookup=cache.lookup, store=cache.store)

    return make


# --- database-backed runs ----------------------------------------------------------------------------------

ROLES = ("curator", "reviewer", "operator")


@pytest.fixture
def curator(transactional_db):
    """A curator, in a database that `transactional_db` flushes between tests (which also drops the role
    groups the migrations created, so they are made again here)."""
    from django.contrib.auth.models import Group, User

    for name in ROLES:
        Group.objects.get_or_create(name=name)
    user = User.objects.create_user(username="carla", password="pw-carla")
    user.groups.add(Group.objects.get(name="curator"))
    return user


@pytest.fixture
def demo(curator):
    """The demo taxonomy imported as a curator would: {leaf path: Leaf}."""
    from curation.models import Leaf
    from curation.services import ImportSource, taxonomy_import
    from tests.support.sdg import DEMO

    record = taxonomy_import(source=ImportSource.directory(DEMO), user=curator, from_shell=True)
    assert record.status == "succeeded", record.problems
    return {leaf.path: leaf for leaf in Leaf.objects.all()}


@pytest.fixture
def fast_retries(settings):
    settings.LABWEB_TEACHER_ATTEMPTS = 4
    settings.LABWEB_TEACHER_RETRY_DELAY = 0.01


@pytest.fixture
def teacher(teacher_server, curator, fast_retries):
    """The scripted teacher, created as an operator would (so probed: it ignores a JSON schema); the tests count
    the calls of their runs, so the probe's is forgotten."""
    from generation.services.teachers import teacher_create

    created = teacher_create(
        user=curator,
        api_key="sk-never-shown",
        name="Scripted teacher",
        base_url=teacher_server.url,
        model=f"scripted-{uuid.uuid4().hex[:8]}",
        max_concurrency=8,
        timeout_seconds=5.0,
    )
    teacher_server.script.forget_requests()
    return created
