"""The project's own promises: strict settings, health, Celery wiring."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from labweb.env import env_bool, env_int, training_storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_bad_boolean_is_an_error_not_false(monkeypatch):
    monkeypatch.setenv("LABWEB_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="LABWEB_FLAG='maybe' is not a boolean"):
        env_bool("LABWEB_FLAG", False)
    monkeypatch.setenv("LABWEB_FLAG", "Yes")
    assert env_bool("LABWEB_FLAG", False) is True
    monkeypatch.setenv("LABWEB_NUMBER", "12x")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("LABWEB_NUMBER", 1)


def test_a_training_bucket_without_its_packages_is_refused_saying_what_to_install(monkeypatch):
    import importlib.util

    assert training_storage("")["BACKEND"] == "training.storage.TrainingDirStorage"
    bucket = training_storage("labweb", endpoint_url="http://minio:9000", prefix="/lab/")
    assert bucket["BACKEND"] == "training.s3.TrainingS3Storage" and bucket["OPTIONS"]["location"] == "lab"
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "storages" else found(name))
    with pytest.raises(ImproperlyConfigured, match=r"storages is not installed: pip install -r requirements-s3.txt"):
        training_storage("labweb")


def _manage(*args: str, **env) -> subprocess.CompletedProcess:
    """manage.py in a new shell: the test runner's DEBUG, SECRET_KEY and DATABASE_URL are not there."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL")}
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_secret_key_is_required_when_debug_is_off_on_a_database_server():
    server = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/labweb_settings_check"}
    result = _manage("check", DEBUG="0", **server)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert _manage("check", DEBUG="0", SECRET_KEY="x" * 50, **server).returncode == 0
    debug = _manage("shell", "-v0", "-c", "from django.conf import settings; print(settings.DEBUG)", DEBUG="1")
    assert debug.stdout.strip() == "True"


def test_the_queued_resend_grace_must_be_at_least_a_second():
    server = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/labweb_settings_check"}
    result = _manage("check", DEBUG="1", LABWEB_QUEUED_RESEND_SECONDS="0", **server)
    assert result.returncode != 0
    assert "LABWEB_QUEUED_RESEND_SECONDS must be at least 1, not 0" in result.stderr
    assert _manage("check", DEBUG="1", LABWEB_QUEUED_RESEND_SECONDS="1", **server).returncode == 0


def test_taxonomy_commands_work_in_a_new_shell_on_the_embedded_defaults(tmp_path):
    """The README's commands, typed in a shell that set nothing: a key of its own in var/, SQLite there too."""
    var = {"LABWEB_VAR_DIR": str(tmp_path / "var")}
    for args in (
        ("migrate", "--no-input", "-v0"),
        ("taxonomy_import", "curation/demo/taxonomy"),
        ("taxonomy_export", str(tmp_path / "out.tar.gz")),
        ("taxonomy_diff",),
    ):
        result = _manage(*args, **var)
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stderr}"
    assert (tmp_path / "out.tar.gz").stat().st_size > 0
    key = tmp_path / "var" / "secret_key"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and len(key.read_text()) >= 50


CONCURRENT_WRITERS = """
import threading, time
from django.db import connection, transaction
from django.db.models import F
from curation.models import Leaf

leaf = Leaf.objects.order_by("pk").first()
start, failures = threading.Barrier(8), []

def claims():
    # a worker thread's claims: read in a transaction, then write (a deferred BEGIN fails this when they overlap)
    start.wait()
    for _ in range(20):
        try:
            with transaction.atomic():
                Leaf.objects.get(pk=leaf.pk)
                time.sleep(0.002)
                Leaf.objects.filter(pk=leaf.pk).update(revision=F("revision") + 1)
        except Exception as error:
            failures.append(repr(error))
    connection.close()

threads = [threading.Thread(target=claims) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(Leaf.objects.get(pk=leaf.pk).revision - leaf.revision, sorted(set(failures)))
"""


def test_worker_threads_write_the_embedded_sqlite_at_once_without_database_locked(tmp_path):
    """scripts/run's worker has 8 threads on the embedded SQLite: transactions that read then write all land."""
    var = {"LABWEB_VAR_DIR": str(tmp_path / "var")}
    for args in (("migrate", "--no-input", "-v0"), ("taxonomy_import", "curation/demo/taxonomy")):
        assert _manage(*args, **var).returncode == 0
    result = _manage("shell", "-v0", "-c", CONCURRENT_WRITERS, **var)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "160 []"


def test_nothing_in_the_repository_reads_outside_it():
    """A user's clone has nothing beside it: what the tests need lies inside the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    # a relative path up to shared/, or the repository's parent joined with it (spelled not to match itself)
    outside = re.compile("|".join((re.escape("/".join(("..", "shared"))), r"parent\s*/\s*[\"']shared[\"']")))
    offenders = [
        name
        for name in tracked
        if name.endswith((".py", ".sh", ".toml", ".ini", ".cfg")) or name.startswith(("scripts/", ".ci/"))
        if outside.search((pathlib.Path(REPO) / name).read_text(errors="replace"))
    ]
    assert offenders == []
    corpus = pathlib.Path(REPO) / "tests" / "fixtures" / "instructlab-taxonomy"
    assert len(list(corpus.rglob("qna.yaml"))) == 426 and (corpus / "LICENSE").is_file()


@pytest.mark.django_db
def test_health_reports_database_and_broker(client):
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_celery_routes_generation_and_training_to_their_queues():
    from labweb.celery import app

    router = app.amqp.router
    assert router.route({}, "generation.tasks.process_item")["queue"].name == "generation"
    assert router.route({}, "training.tasks.train")["queue"].name == "training"
    assert router.route({}, "curation.tasks.anything")["queue"].name == "default"
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1


def test_every_task_retries_a_database_that_is_away_or_locked():
    """A task that fails before it claims its unit holds no lease for the reaper to find: it must retry itself."""
    from django.db import OperationalError

    from labweb.celery import app

    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert "generation.tasks.process_item" in ours and "generation.tasks.dispatch_run" in ours
    assert {name for name, task in ours.items() if OperationalError not in task.autoretry_for} == set()
    assert all(task.max_retries and task.retry_backoff for task in ours.values())


def test_the_first_run_gives_beat_and_the_reaper_a_worker_that_generation_cannot_fill():
    from labweb.celery import app

    reaper = app.conf.beat_schedule["reap-expired-job-work"]["task"]
    assert app.amqp.router.route({}, reaper)["queue"].name == "default"
    script = (pathlib.Path(__file__).resolve().parents[1] / "scripts" / "run").read_text()
    workers = [line.split() for line in script.replace("\\\n", " ").splitlines() if "celery -A labweb worker" in line]
    queues = {tuple(words[words.index("-Q") + 1].split(",")): "-B" in words for words in workers}
    assert queues == {("generation", "training"): False, ("default",): True}


@pytest.mark.django_db
def test_every_model_has_an_admin():
    from django.apps import apps
    from django.contrib import admin

    ours = [m for app in ("curation", "generation") for m in apps.get_app_config(app).get_models()]
    missing = [m.__name__ for m in ours if m not in admin.site._registry]
    assert missing == []
