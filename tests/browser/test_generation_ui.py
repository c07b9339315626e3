"""A generation run as an operator lives it: started from the browser, executed by a real Celery worker against
a scripted teacher server, watched live, cancelled, resumed and finished."""

import re

import pytest
import redis
from django.conf import settings
from django.db import connection
from playwright.sync_api import expect

from generation.models import GenerationRun, Sample
from generation.services.teachers import teacher_create
from tests.browser.conftest import sign_in
from tests.support.teacher_server import TeacherServer
from tests.support.worker import Worker, worker_env

pytestmark = pytest.mark.browser


@pytest.fixture
def teacher_server():
    with TeacherServer() as server:
        server.script.latency = 0.25
        yield server


@pytest.fixture
def worker(demo, tmp_path):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()
    process = Worker(
        "browser",
        tmp_path / "worker.log",
        worker_env(connection.settings_dict["NAME"], settings.CELERY_BROKER_URL, PYTHONUNBUFFERED="1"),
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()
        broker.flushdb()
        broker.close()


def percent(page) -> int:
    return int(page.locator("#run-progress .progress-bar").first.get_attribute("data-percent"))


def test_an_operator_starts_watches_cancels_and_resumes_a_run(page, operator, curator, teacher_server, worker):
    teacher_create(user=curator, name="Scripted vLLM", base_url=teacher_server.url, model="scripted", max_concurrency=4)
    sign_in(page, operator, start="/generation/runs/new/")
    page.select_option("select[name=teacher]", label="Scripted vLLM")
    page.check("input[name=scope][value=all]")
    page.fill("input[name=samples_per_leaf]", "12")
    page.click("#start-run")
    page.wait_for_url(re.compile(r"/generation/runs/\d+/"))
    run = GenerationRun.objects.get()
    page.evaluate("window.__sameDocument = true")

    # The progress panel moves while the worker works, without a page load.
    expect(page.locator("#run-status")).to_contain_text("running", timeout=30_000)
    page.wait_for_function(
        "() => { const p = document.querySelector('#run-progress .progress-bar');"
        " return p && Number(p.dataset.percent) > 0; }",
        timeout=30_000,
    )
    assert 0 < percent(page) < 100
    assert page.evaluate("window.__sameDocument") is True

    page.click("#cancel-run")
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=10_000)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.CANCELLED
    # Items in flight stop at their next heartbeat; the panel polls until they have, then stops polling and
    # shows what the database holds.
    expect(page.locator("#run-progress")).to_have_attribute("data-live", "false", timeout=30_000)
    expect(page.locator("#run-progress")).not_to_have_attribute("hx-trigger", re.compile(".*"))
    expect(page.locator("#item-states [data-state=running]")).to_have_text("0")
    for state in ("done", "cancelled", "pending"):
        count = run.items.filter(state=state).count()
        expect(page.locator(f"#item-states [data-state={state}]")).to_have_text(str(count))
    kept_when_cancelled = Sample.objects.filter(run=run).count()

    page.click("#resume-run")
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=90_000)
    expect(page.locator("#run-progress .progress-bar").first).to_have_attribute("data-percent", "100")
    run.refresh_from_db()
    samples = Sample.objects.filter(run=run)
    # 4 demo leaves x 12 samples, and every sample once, whatever the cancel interrupted.
    assert samples.count() == 48 >= kept_when_cancelled
    assert samples.values("idempotency_key").distinct().count() == 48
    page.goto(f"/generation/samples/?run={run.pk}")
    expect(page.locator("#sample-count")).to_contain_text("48")


def test_a_run_whose_every_item_failed_shows_its_bars_in_the_failure_colour(
    page, operator, curator, teacher_server, worker
):
    from generation.services.runs import run_create

    teacher_server.script.bad_request_every = 1  # HTTP 400: not worth retrying, so every item fails at once
    teacher = teacher_create(user=curator, name="Refusing server", base_url=teacher_server.url, model="refusing")
    run = run_create(teacher=teacher, user=curator, samples_per_leaf=2)
    sign_in(page, operator, start=f"/generation/runs/{run.pk}/")
    expect(page.locator("#run-status")).to_contain_text("failed", timeout=60_000)
    expect(page.locator("#run-progress")).to_have_attribute("data-live", "false", timeout=10_000)
    items = run.items.count()
    expect(page.locator("#run-failed")).to_have_text(f"{items} failed")

    bars = page.locator("#run-progress .progress-bar")
    expect(bars).to_have_count(1 + run.items.values("leaf_path").distinct().count())
    bad = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bad').trim()")
    for bar in bars.all():
        failed = bar.locator(".progress-failed")
        expect(failed).to_have_attribute("style", "width: 100%")
        assert failed.evaluate("e => getComputedStyle(e).backgroundColor") == page.evaluate(
            f"() => {{ const e = document.createElement('i'); e.style.color = '{bad}'; document.body.append(e);"
            " const c = getComputedStyle(e).color; e.remove(); return c; }"
        )
        expect(bar.locator(".progress-done")).to_have_attribute("style", "width: 0%")
