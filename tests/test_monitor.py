"""The operators' dashboard and the health endpoints, against real Celery workers on the test's Redis."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.urls import reverse

from generation.models import GenerationRun
from labweb import monitor
from labweb.monitor import checks
from tests import test_api_roles
from tests.support.worker import Worker, worker_env
from training.models import TrainingJob

world = test_api_roles.world  # a queued run, a running training job and a stopped one


@pytest.fixture(autouse=True)
def fresh_inspection():
    cache.delete(checks.CACHE_KEY)
    yield
    cache.delete(checks.CACHE_KEY)


def start(name: str, queues: str, tmp_path, settings) -> Worker:
    env = worker_env(connection.settings_dict["NAME"], settings.CELERY_BROKER_URL)
    return Worker(name, tmp_path / f"{name}.log", env, queues=queues, concurrency=1)


def test_healthz_answers_without_sign_in(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_every_kind_of_job_is_registered_with_the_queue_it_runs_on():
    kinds = {kind.name: kind for kind in monitor.job_kinds()}
    assert kinds["generation"].model is GenerationRun and kinds["generation"].queue == "generation"
    assert kinds["training"].model is TrainingJob and kinds["training"].queue == "training"
    assert kinds["training"].cancel and kinds["training"].retry
    assert monitor.queues() == ["default", "generation", "training"]


def test_readiness_fails_while_no_worker_consumes_a_queue_and_the_dashboard_shows_the_workers(
    transactional_db, broker, settings, tmp_path, client, operator
):
    settings.LABWEB_MONITOR_CACHE_SECONDS = 0  # every request asks the workers again
    web = start("web", "default,generation", tmp_path, settings)
    gpu = None
    try:
        web.wait_ready()
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["database"] == body["checks"]["redis"] == "ok"
        assert body["checks"]["workers"] == "error: no worker consumes training"
        assert body["queues"] == {"default": 1, "generation": 1, "training": 0}

        client.force_login(operator)
        page = client.get(reverse("monitor:dashboard")).content.decode()
        assert 'data-worker="web@' in page
        assert "<code>default</code>, <code>generation</code>" in page
        assert '<tr data-queue="training"><th scope="row">Queue <code>training</code></th>' in page
        assert "no worker" in page

        gpu = start("gpu", "training", tmp_path, settings)
        gpu.wait_ready()
        response = client.get("/readyz")
        assert response.status_code == 200, response.json()
        assert response.json() == {
            "status": "ok",
            "checks": {"database": "ok", "redis": "ok", "workers": "ok"},
            "queues": {"default": 1, "generation": 1, "training": 1},
        }
        assert 'data-worker="gpu@' in client.get(reverse("monitor:dashboard")).content.decode()
    finally:
        web.kill()
        if gpu:
            gpu.kill()


def test_readiness_fails_when_redis_does_not_answer(db, client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "error: ConnectionError"
    assert body["checks"]["workers"].startswith("Redis does not answer")


def test_the_dashboard_lists_active_jobs_with_progress_and_recent_failures(
    world, client, operator, django_assert_max_num_queries
):
    failed = TrainingJob.objects.create(
        name="broken", base_model="base", output_dir="/tmp/x", status="failed", error="CUDA out of memory"
    )
    client.force_login(operator)
    cache.set(checks.CACHE_KEY, checks.Workers(), 60)  # the workers as last asked: no broadcast in this test
    # Session, user and roles; then per kind of job (generation, dataset builds, training, evaluation, imports,
    # bulk review) its active jobs, its failures and one more, and a progress query for those that keep progress
    # elsewhere: 23, whatever the number of jobs.
    with django_assert_max_num_queries(23):
        page = client.get(reverse("monitor:dashboard")).content.decode()
    assert f'data-job="generation-{world.run}"' in page
    assert "0 of 5 work items, 0 samples kept" in page
    assert reverse("monitor:cancel", args=["generation", world.run]) in page
    assert f'data-job="training-{world.training_job}"' in page
    assert "phase 1 of 1 (one): step 0 of ?, epoch 0" in page
    assert f'data-failure="training-{failed.pk}"' in page
    assert f'data-job="imports-{world.import_job}"' in page and "waiting for a worker" in page
    assert "CUDA out of memory" in page
    assert reverse("monitor:retry", args=["training", failed.pk]) in page


def test_health_endpoints_answer_over_plain_http_when_https_is_enforced(db, client, settings):
    settings.SECURE_SSL_REDIRECT = True  # what LABWEB_HTTPS=1 sets: a load balancer probes over plain HTTP
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)
    assert client.get("/accounts/login/").status_code == 301


def test_retry_on_the_dashboard_starts_a_failed_job_again(world, client, operator, django_capture_on_commit_callbacks):
    from evaluation.models import EvaluationJob

    failed = EvaluationJob.objects.get(pk=world.evaluation)
    EvaluationJob.objects.filter(pk=failed.pk).update(status="failed", error="The judge failed 5 calls in a row")
    client.force_login(operator)
    cache.set(checks.CACHE_KEY, checks.Workers(), 60)
    assert f'data-failure="evaluation-{failed.pk}"' in client.get(reverse("monitor:dashboard")).content.decode()
    with django_capture_on_commit_callbacks() as sent:
        response = client.post(reverse("monitor:retry", args=["evaluation", failed.pk]), HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200 and "started again." in page
    assert f'data-failure="evaluation-{failed.pk}"' not in page
    assert f'data-job="evaluation-{failed.pk}"' in page  # queued again, with its progress
    failed.refresh_from_db()
    assert (failed.status, failed.error) == ("queued", "") and len(sent) == 1
