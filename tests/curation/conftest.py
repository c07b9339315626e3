import pytest

from tests.curation.jobs import start_worker


@pytest.fixture(scope="module")
def import_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """One worker of the default queue for a module's tests, with beat (the reaper)."""
    from django.conf import settings

    worker = start_worker("importer", tmp_path_factory.mktemp("importer"), settings, beat=True)
    yield worker
    worker.kill()
