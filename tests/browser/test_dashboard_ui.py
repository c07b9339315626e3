"""The operators' dashboard as an operator uses it: a training job that a real worker runs with torchrun shows
its progress live, the worker shows the task it is running, and Cancel on the dashboard stops the job."""

import json
import re

import pytest
from django.core.cache import cache
from playwright.sync_api import expect

from labweb import jobs
from labweb.monitor import checks
from tests.browser.conftest import sign_in
from tests.browser.test_training_ui import FACTS, storage, worker  # noqa: F401 - the fixtures
from training.models import TrainingJob
from training.services.jobs import job_create

pytestmark = pytest.mark.browser


def test_the_dashboard_shows_a_running_jobs_progress_and_cancels_it(page, operator, storage, worker, settings):  # noqa: F811
    settings.LABWEB_MONITOR_CACHE_SECONDS = 1
    cache.delete(checks.CACHE_KEY)
    (storage / "uploads").mkdir()
    (storage / "uploads" / "facts.jsonl").write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in FACTS
        )
    )
    # Long enough that Cancel lands first: on a quiet box the tiny model runs 600 steps in 12 s.
    config = {"epochs": 5000, "learning_rate": 0.01, "effective_batch_size": 2, "max_seq_len": 64}
    job = job_create(
        name="long memorising",
        base_model=str(storage / "base"),
        user=operator,
        phases=[{"name": "only", "recipe": "datasets:\n- path: uploads/facts.jsonl\n", "config": config}],
    )
    sign_in(page, operator, start="/operations/")
    page.evaluate("window.__sameDocument = true")
    row = page.locator(f'tr[data-job="training-{job.pk}"]')
    # Live: the step count moves on the page without a reload.
    expect(row.locator(".progress-text")).to_contain_text(re.compile(r"step [1-9]\d* of 10000"), timeout=120_000)
    expect(page.locator("#workers tr[data-worker^='gpu-box@']")).to_contain_text("training.tasks.run_phase_node")
    expect(page.locator('#checks tr[data-queue="training"]')).to_contain_text("1 worker")
    assert page.evaluate("window.__sameDocument") is True

    row.get_by_role("button", name=f"Cancel {job}").click()
    expect(page.locator("#live .messages")).to_contain_text(f"{job}: cancelled")
    expect(row).to_have_count(0)
    job.refresh_from_db()
    assert job.status == jobs.Status.CANCELLED
    # The trainer finishes its step, saves a checkpoint and stops; the phase says so.
    phase = job.phases.get()
    for _ in range(600):
        phase.refresh_from_db()
        if not phase.is_active:
            break
        page.wait_for_timeout(200)
    assert phase.status == jobs.Status.CANCELLED and phase.exit_kind == "cancelled", (phase.error, worker.tail(20))
    assert 0 < phase.step < 10000
    assert TrainingJob.objects.get(pk=job.pk).status == jobs.Status.CANCELLED
