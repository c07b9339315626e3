"""A training job as an operator lives it: data uploaded, the job started from the browser, run by a real Celery
worker with torchrun, watched live with its loss curve, and its checkpoints listed with their lineage."""

import json
import re

import pytest
import redis
from django.conf import settings
from django.db import connection
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.support.tiny_model import build_tiny_model
from tests.support.worker import Worker, worker_env
from training.models import Checkpoint, TrainingJob

pytestmark = pytest.mark.browser
FACTS = [
    ("what do bees make", "bees make honey"),
    ("what do cows drink", "cows drink water"),
    ("where do fish live", "fish live in the sea"),
    ("what colour is the sky", "the sky is blue"),
]


@pytest.fixture
def storage(tmp_path, settings):
    root = tmp_path / "training"
    root.mkdir()
    settings.LABWEB_TRAINING_DIR = str(root)
    build_tiny_model(root / "base", [f"{q} {a}" for q, a in FACTS])
    return root


@pytest.fixture
def worker(transactional_db, storage, tmp_path):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
        LABWEB_TRAINING_DIR=str(storage),
        OMP_NUM_THREADS="1",
    )
    process = Worker("gpu-box", tmp_path / "worker.log", env, queues="training,default", concurrency=1)
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()
        broker.flushdb()
        broker.close()


def test_an_operator_uploads_data_starts_a_job_and_watches_it_train(page, operator, storage, worker, tmp_path):
    data = tmp_path / "facts.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in FACTS
        )
    )
    sign_in(page, operator, start="/training/uploads/")
    page.set_input_files("input[name=file]", str(data))
    page.click("#upload")
    expect(page.locator(".messages")).to_contain_text("uploads/facts.jsonl: 4 samples")
    expect(page.locator("#upload-list")).to_contain_text("uploads/facts.jsonl")

    page.goto("/training/jobs/new/")
    page.fill("input[name=name]", "memorise facts")
    page.fill("input[name=base_model]", str(storage / "base"))
    page.fill("textarea[name=phase0_recipe]", "datasets:\n- path: uploads/facts.jsonl\n  sampling_size: 1.0\n")
    page.fill("input[name=phase0_epochs]", "6")
    page.fill("input[name=phase0_learning_rate]", "0.01")
    page.fill("input[name=phase0_effective_batch_size]", "2")
    page.fill("input[name=phase0_max_seq_len]", "64")
    page.fill("input[name=phase0_max_tokens_per_device]", "64")
    page.click("#start-job")
    page.wait_for_url(re.compile(r"/training/jobs/\d+/"))
    page.evaluate("window.__sameDocument = true")

    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=120_000)
    assert page.evaluate("window.__sameDocument") is True  # it got there live, without a page load
    expect(page.locator("#phases [data-steps]").first).to_contain_text("step 12 of 12")
    expect(page.locator("#checkpoints tr[data-checkpoint]")).to_have_count(6)
    page.wait_for_function(
        "() => { const c = window.Chart && Chart.getChart('loss-chart');"
        " return c && c.data.datasets.length && c.data.datasets[0].data.length === 12; }",
        timeout=15_000,
    )
    job = TrainingJob.objects.get()
    last = Checkpoint.objects.filter(phase__job=job).order_by("-step").first()
    assert last.name == "epoch-006" and last.lineage["data_samples"] == 4
    page.screenshot(path=str(tmp_path / "training-job.png"), full_page=True)

    # The checkpoint answers in the app: a training worker loads it and replies.
    page.click('#checkpoints tr[data-checkpoint="epoch-006"] a')
    page.fill("textarea[name=prompt]", "what do bees make")
    page.click("#ask")
    expect(page.locator('#answers .answer[data-status="succeeded"]')).to_have_count(1, timeout=60_000)
    # What the page shows is what the checkpoint itself says to that question, decoding greedily.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(last.path), AutoModelForCausalLM.from_pretrained(last.path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "what do bees make"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=128, do_sample=False)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert last.prompts.get().answer == expected
