"""The training storage in an S3-compatible bucket: moto's S3 server, started by the test, keeps the dataset builds
and uploads; a training worker that did not write them reads them through a cache of its own, checked by hash."""

import hashlib
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from labweb import jobs
from labweb.env import training_storage
from review.models import ReviewItem
from review.services.decisions import sample_decide
from tests.support.s3 import s3_server as s3_server_at
from tests.support.tiny_model import build_tiny_model
from tests.support.worker import Worker, wait_for, worker_env
from training.models import Checkpoint, Dataset, StepMetric, TrainingJob

pytestmark = pytest.mark.django_db(transaction=True)
BUCKET, PREFIX, REGION = "labweb-training", "lab", "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
SETTINGS = {
    "epochs": 2,
    "learning_rate": 0.01,
    "effective_batch_size": 4,
    "max_seq_len": 160,
    "max_tokens_per_device": 320,
    "scheduler": "constant",
    "seed": 3,
}
REPLAY = [("w1 w2 w3", "w4 w5 w6"), ("w7 w8", "w9 w10")]


@pytest.fixture
def s3_server(tmp_path):
    with s3_server_at(tmp_path / "moto.log") as url:
        yield url


@pytest.fixture
def bucket(s3_server, settings, monkeypatch, tmp_path):
    """The training storage in a new bucket of that server (under a prefix); this process's cache of its own."""
    import boto3

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_server, region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    settings.LABWEB_TRAINING_DIR = str(tmp_path / "training")  # trainer output and checkpoints only
    settings.LABWEB_TRAINING_CACHE_DIR = str(tmp_path / "web-cache")
    entry = training_storage(BUCKET, endpoint_url=s3_server, region=REGION, prefix=PREFIX)
    settings.STORAGES = {**settings.STORAGES, "training": entry}
    return client


def stored(client, name: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")["Body"].read()


def test_a_build_in_a_bucket_trains_on_a_worker_that_reads_it_into_its_cache_checked_and_downloads_streamed(
    make_samples, reviewer, operator, celery_mode, bucket, s3_server, settings, tmp_path, client
):
    from transformers import AutoModelForCausalLM

    base = build_tiny_model(
        tmp_path / "training" / "base", [" ".join(f"w{n}" for n in range(97)), "Question Answer helpful assistant"]
    )
    make_samples(1)  # 15 samples over 3 leaves
    for item in ReviewItem.objects.order_by("pk")[:6]:
        sample_decide(sample_id=item.pk, reviewer=reviewer, action="approve", expected_version=item.version)
    client.force_login(operator)

    # The build runs here (eager): this process writes the file to the bucket and keeps its own copy.
    celery_mode(eager=True)
    body = {"name": "in a bucket", "plan": "stacked", "held_out_fraction": 0.0, "tokenizer": base}
    response = client.post("/api/datasets/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    celery_mode(eager=False)
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert dataset.status == jobs.Status.SUCCEEDED, dataset.error
    file = dataset.files.get(role="all")
    assert file.path == f"datasets/dataset-{dataset.pk}/all.jsonl" and file.samples == 6
    built = stored(bucket, file.path)
    assert hashlib.sha256(built).hexdigest() == file.sha256 and len(built) == file.bytes
    assert not (tmp_path / "training" / "datasets").exists()  # nothing of it outside the bucket but the cache
    assert (tmp_path / "web-cache" / "sha256" / f"{file.sha256}.jsonl").read_bytes() == built

    # A community replay set uploaded through the API goes to the bucket too; its name is never reused.
    replay = "".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in REPLAY
    ).encode()
    upload = client.post("/api/training-uploads/", {"file": SimpleUploadedFile("replay.jsonl", replay)})
    assert upload.status_code == 201, upload.content
    assert stored(bucket, "uploads/replay.jsonl") == replay
    assert client.get("/api/training-uploads/").json() == [{"path": "uploads/replay.jsonl", "bytes": len(replay)}]
    again = client.post("/api/training-uploads/", {"file": SimpleUploadedFile("replay.jsonl", b"{}\n")})
    assert again.status_code == 409 and stored(bucket, "uploads/replay.jsonl") == replay

    # A training worker with the bucket and an empty cache of its own (a GPU machine that wrote nothing).
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        LABWEB_EVALUATE_AFTER_PHASE="0",
        LABWEB_TRAINING_DIR=str(tmp_path / "training"),
        LABWEB_TRAINING_CACHE_DIR=str(tmp_path / "node-cache"),
        LABWEB_TRAINING_S3_BUCKET=BUCKET,
        LABWEB_TRAINING_S3_ENDPOINT_URL=s3_server,
        LABWEB_TRAINING_S3_REGION=REGION,
        LABWEB_TRAINING_S3_PREFIX=PREFIX,
        **CREDENTIALS,
    )
    worker = Worker("node", tmp_path / "worker.log", env, queues="training", concurrency=1)
    try:
        worker.wait_ready()
        recipe = f"datasets:\n- path: {file.path}\n  sampling_size: 1.0\n"
        recipe += "- path: uploads/replay.jsonl\n  sampling_size: 1\n"
        job_body = {
            "name": "from the bucket",
            "base_model": base,
            "phases": [{"name": "stacked", "recipe": recipe, "config": SETTINGS}],
        }
        response = client.post("/api/training-jobs/", job_body, content_type="application/json")
        assert response.status_code == 201, response.content
        job = TrainingJob.objects.get(pk=response.json()["id"])
        wait_for(lambda: job.refresh_from_db() or not job.is_active, timeout=240, what="the job", worker=worker)
        assert job.status == jobs.Status.SUCCEEDED, (job.error, worker.tail(30))
    finally:
        worker.kill()
    (phase,) = job.phases.all()
    replay_sha = hashlib.sha256(replay).hexdigest()
    assert phase.data_samples == 8 and phase.data_sources == [
        {"path": file.path, "sha256": file.sha256, "samples": 6},
        {"path": "uploads/replay.jsonl", "sha256": replay_sha, "samples": 2},
    ]
    assert StepMetric.objects.filter(phase=phase).count() == phase.total_steps == 4
    # The worker read both from the bucket into its own cache, the build's copy under the hash it was checked on.
    assert (tmp_path / "node-cache" / "sha256" / f"{file.sha256}.jsonl").read_bytes() == built
    assert (tmp_path / "node-cache" / "named" / "uploads" / "replay.jsonl").read_bytes() == replay
    checkpoint = Checkpoint.objects.get(phase=phase, name="epoch-002")
    assert checkpoint.lineage["sources"] == phase.data_sources
    assert AutoModelForCausalLM.from_pretrained(checkpoint.path).config.num_hidden_layers == 2

    # Downloads stream from the bucket, byte for byte what was built.
    for url in (f"/api/datasets/{dataset.pk}/files/all/", f"/training/datasets/{dataset.pk}/files/all.jsonl"):
        download = client.get(url)
        assert download.status_code == 200 and download.streaming
        assert int(download["Content-Length"]) == file.bytes and "attachment" in download["Content-Disposition"]
        assert hashlib.sha256(b"".join(download.streaming_content)).hexdigest() == file.sha256

    # A reader without a copy refuses a file changed in the bucket after its build, and keeps none of it.
    bucket.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{file.path}", Body=built.replace(b"Answer", b"answer", 1))
    settings.LABWEB_TRAINING_CACHE_DIR = str(tmp_path / "fresh-cache")
    refused = client.post("/api/training-jobs/mix/", job_body, content_type="application/json")
    assert refused.status_code == 400, refused.content
    error = refused.json()["error"]
    assert error["field"] == "phases[0].recipe.datasets[0].path" and "not the file its build wrote" in error["message"]
    assert not list((tmp_path / "fresh-cache").rglob("*.jsonl"))
