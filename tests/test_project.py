"""The project's own promises: strict settings, health, Celery wiring."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from labweb.env import env_bool, env_int

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


def _settings_in_subprocess(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")}
    return subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
         "'labweb.settings'); django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_secret_key_is_required_when_debug_is_off():
    result = _settings_in_subprocess(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert _settings_in_subprocess(DEBUG="0", SECRET_KEY="x" * 50).returncode == 0
    assert _settings_in_subprocess(DEBUG="1").stdout.strip() == "True"


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


@pytest.mark.django_db
def test_every_model_has_an_admin():
    from django.apps import apps
    from django.contrib import admin

    ours = [m for app in ("curation", "generation") for m in apps.get_app_config(app).get_models()]
    missing = [m.__name__ for m in ours if m not in admin.site._registry]
    assert missing == []
