"""Training jobs through a real Celery worker on the training queue, launching real torchrun processes (gloo)."""

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone

from labweb import jobs
from tests.support.tiny_model import build_tiny_model
from tests.support.worker import Worker, drop_queued, wait_for, worker_env
from training.models import Checkpoint, CheckpointPrompt, StepMetric, TrainingJob, TrainingNode, TrainingPhase
from training.services.jobs import job_cancel, job_create, job_resume
from training.services.prompts import prompt_ask
from training.trainer.events import read_events

pytestmark = pytest.mark.django_db(transaction=True)
FACTS = [
    ("what colour is the sky", "the sky is blue"),
    ("what do cows drink", "cows drink water"),
    ("how many legs has a spider", "a spider has eight legs"),
    ("where do fish live", "fish live in the sea"),
]
SETTINGS = {
    "epochs": 4,
    "learning_rate": 0.01,
    "effective_batch_size": 2,
    "max_seq_len": 64,
    "max_tokens_per_device": 64,
    "scheduler": "constant",
    "seed": 3,
}


def messages(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def storage(tmp_path, settings):
    root = tmp_path / "training"
    (root / "uploads").mkdir(parents=True)
    settings.LABWEB_TRAINING_DIR = str(root)
    (root / "uploads" / "facts.jsonl").write_text("".join(json.dumps(messages(q, a)) + "\n" for q, a in FACTS))
    build_tiny_model(root / "base", [f"{q} {a}" for q, a in FACTS])
    return root


def trainer_env(storage, settings, **extra: str) -> dict:
    """A training worker's environment: the test's database, broker and training storage."""
    return worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
        LABWEB_TRAINING_DIR=str(storage),
        OMP_NUM_THREADS="1",
        **extra,
    )


@pytest.fixture
def worker(storage, queued, settings, tmp_path):
    env = trainer_env(storage, settings)
    process = Worker("trainer", tmp_path / "worker.log", env, queues="training,default", concurrency=2)
    process.wait_ready()
    yield process
    process.kill()


def recipe(path: str, size=1.0) -> str:
    return f"datasets:\n- path: {path}\n  sampling_size: {size}\n"


def done(job: TrainingJob):
    job.refresh_from_db()
    return not job.is_active and job


def test_a_two_phase_job_trains_on_the_worker_each_phase_from_the_last_checkpoint(worker, storage, operator, client):
    job = job_create(
        name="knowledge then skills",
        base_model=str(storage / "base"),
        user=operator,
        processes_per_node=2,
        phases=[
            {"name": "knowledge", "recipe": recipe("uploads/facts.jsonl"), "config": SETTINGS},
            {"name": "skills", "recipe": recipe("uploads/facts.jsonl", 2), "config": {**SETTINGS, "epochs": 1}},
        ],
    )
    wait_for(lambda: done(job), timeout=240, what="the job to finish", worker=worker)
    assert job.status == jobs.Status.SUCCEEDED, (job.error, worker.tail(30))
    first, second = job.phases.order_by("order")
    assert (first.step, first.total_steps, second.step) == (8, 8, 1)
    assert first.data_samples == 4 and second.data_samples == 2 and len(first.data_sha256) == 64
    last = Checkpoint.objects.get(phase=first, name="epoch-004")
    assert second.model_path == last.path
    assert last.lineage["data_sha256"] == first.data_sha256 and last.lineage["config"] == SETTINGS
    # Lineage: the checkpoint names its job, phase, recipe, settings, and each source with the hash of its bytes.
    facts = hashlib.sha256((storage / "uploads" / "facts.jsonl").read_bytes()).hexdigest()
    assert (last.lineage["job"], last.lineage["phase"], last.lineage["recipe"]) == (job.pk, "knowledge", first.recipe)
    assert last.lineage["sources"] == [{"path": "uploads/facts.jsonl", "sha256": facts, "samples": 4}]
    (then,) = Checkpoint.objects.filter(phase=second)
    assert then.lineage["sources"] == [{"path": "uploads/facts.jsonl", "sha256": facts, "samples": 2}]
    assert then.lineage["started_from"] == last.path
    client.force_login(operator)
    page = client.get(f"/training/checkpoints/{last.pk}/").content.decode()
    assert "uploads/facts.jsonl" in page and facts[:12] in page and "sampling_size: 1.0" in page
    losses = list(StepMetric.objects.filter(phase=first).values_list("loss", flat=True))
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert job.events.filter(message__contains="Every phase is done").exists()


def test_cancel_stops_after_a_step_with_a_checkpoint_and_resume_continues_the_count(worker, storage, operator, client):
    long = {**SETTINGS, "epochs": 300}
    job = job_create(
        name="long",
        base_model=str(storage / "base"),
        user=operator,
        phases=[{"name": "only", "recipe": recipe("uploads/facts.jsonl"), "config": long}],
    )
    phase = job.phases.get()
    wait_for(lambda: StepMetric.objects.filter(phase=phase).count() >= 3, timeout=120, what="3 steps", worker=worker)
    # While it runs, the page and the API show the last step's figures and the time the rest should take.
    client.force_login(operator)
    live = client.get(f"/api/training-jobs/{job.pk}/").json()["phases"][0]
    assert live["seconds_left"] > 0
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_second", "samples_per_second", "memory_mb"} <= set(
        live["latest"]
    )
    panel = client.get(f"/training/jobs/{job.pk}/progress/", HTTP_HX_REQUEST="true").content.decode()
    for shown in ("left</span>", "loss ", "lr ", "grad norm", "tokens/s", "samples/s", " MB"):
        assert shown in panel, shown
    job_cancel(job=job, user=operator)
    wait_for(
        lambda: job.phases.get().status == jobs.Status.CANCELLED, timeout=120, what="the phase to stop", worker=worker
    )
    phase.refresh_from_db()
    stopped = phase.step
    assert 3 <= stopped < 600 and phase.exit_kind == "cancelled"
    assert Checkpoint.objects.filter(phase=phase, step=stopped).exists()

    phase.config = {**long, "max_steps": stopped + 4}
    phase.save(update_fields=["config"])
    job_resume(job=job, user=operator)
    wait_for(lambda: done(job), timeout=120, what="the resumed job", worker=worker)
    assert job.status == jobs.Status.SUCCEEDED, job.error
    steps = list(StepMetric.objects.filter(phase=phase).values_list("step", flat=True))
    assert steps == list(range(1, stopped + 5))


@pytest.mark.parametrize(
    ("spoil", "kind", "said"),
    [
        ("data", "bad_input", "Not JSON"),  # the bad line is named: bad.jsonl:2
        ("weights", "crash", "SafetensorError"),
    ],
)
def test_a_trainer_that_fails_fails_its_job_with_its_kind_and_the_reason_on_the_page(
    worker, storage, operator, client, spoil, kind, said
):
    import shutil

    (storage / "uploads" / "bad.jsonl").write_text(json.dumps(messages("q", "a")) + "\n{not json\n")
    shutil.copytree(storage / "base", storage / "broken")
    (storage / "broken" / "model.safetensors").write_bytes(b"not the weights")
    data, base = ("uploads/bad.jsonl", "base") if spoil == "data" else ("uploads/facts.jsonl", "broken")
    job = job_create(
        name="bad",
        base_model=str(storage / base),
        user=operator,
        phases=[{"name": "only", "recipe": recipe(data), "config": SETTINGS}],
    )
    wait_for(lambda: done(job), timeout=120, what="the job to fail", worker=worker)
    assert job.status == jobs.Status.FAILED
    phase = job.phases.get()
    assert phase.exit_kind == kind and said in phase.error, phase.error
    if spoil == "data":
        assert ":2" in phase.error
    client.force_login(operator)
    page = client.get(f"/training/jobs/{job.pk}/").content.decode()
    assert kind in page and said in page


def test_a_job_outside_the_training_storage_or_with_a_bad_setting_is_refused_naming_the_field(storage, operator):
    from labweb.errors import LabError

    cases = [
        ({"recipe": recipe("/etc/passwd")}, "phases[0].recipe.datasets[0].path"),
        ({"recipe": recipe("uploads/../../outside.jsonl")}, "phases[0].recipe.datasets[0].path"),
        ({"recipe": recipe("uploads/missing.jsonl")}, "phases[0].recipe.datasets[0].path"),
        ({"config": {**SETTINGS, "epochs": 0}}, "phases[0].config.epochs"),
        ({"config": {**SETTINGS, "model": "elsewhere"}}, "phases[0].config.model"),
        ({"recipe": "datasets: []"}, "phases[0].recipe"),
    ]
    for change, field in cases:
        phase = {"name": "p", "recipe": recipe("uploads/facts.jsonl"), "config": SETTINGS, **change}
        with pytest.raises(LabError) as error:
            job_create(name="x", base_model=str(storage / "base"), user=operator, phases=[phase], start=False)
        assert error.value.field == field
    assert not TrainingJob.objects.exists()


def test_the_mix_is_shown_before_a_job_starts_per_phase_source_and_leaf_as_the_task_writes_it(
    storage, operator, client
):
    from transformers import AutoTokenizer

    from training.services.jobs import stored_recipe
    from training.trainer.mixing import metadata_leaf, mix

    with open(storage / "uploads" / "leaves.jsonl", "w") as handle:
        for n, (q, a) in enumerate(FACTS * 3):  # 12 samples, 6 a leaf
            handle.write(json.dumps({**messages(q, a), "metadata": {"leaf": f"knowledge/leaf{n % 2}"}}) + "\n")
    replay = recipe("uploads/leaves.jsonl", 0.5) + "- path: uploads/facts.jsonl\n  sampling_size: 6\n"
    body = {
        "base_model": str(storage / "base"),
        "phases": [
            {"name": "knowledge", "recipe": recipe("uploads/leaves.jsonl"), "config": SETTINGS},
            {"name": "replay", "recipe": replay, "config": {**SETTINGS, "seed": 9}},
        ],
    }
    client.force_login(operator)
    response = client.post("/api/training-jobs/mix/", body, content_type="application/json")
    assert response.status_code == 200, response.content
    first, second = response.json()
    assert [(s["path"], s["available"], s["samples"]) for s in second["sources"]] == [
        ("uploads/leaves.jsonl", 12, 6),  # a float is a fraction
        ("uploads/facts.jsonl", 4, 6),  # an integer a count, repeating past the whole
    ]
    assert {leaf["leaf"]: leaf["samples"] for leaf in first["leaves"]} == {"knowledge/leaf0": 6, "knowledge/leaf1": 6}
    assert sum(leaf["samples"] for leaf in second["leaves"]) == second["samples"] == 12
    assert [leaf["leaf"] for leaf in second["leaves"]][0] == ""  # facts.jsonl names no leaf

    # The same samples and tokens as the mix the task writes with the phase's seed, counted on its file.
    tokenizer = AutoTokenizer.from_pretrained(storage / "base")
    template = tokenizer.apply_chat_template
    for phase, shown in zip(body["phases"], (first, second), strict=True):
        written = mix(
            stored_recipe(phase["recipe"], path="r")[0], storage / "mixed.jsonl", seed=phase["config"]["seed"],
            leaf_of=metadata_leaf,
        )  # fmt: skip
        tokens = sum(
            len(tokenizer(template(json.loads(line)["messages"], tokenize=False), add_special_tokens=False).input_ids)
            for line in open(storage / "mixed.jsonl")
        )
        assert (shown["samples"], shown["tokens"]) == (written.samples, tokens)
        named = {leaf["leaf"]: leaf["samples"] for leaf in shown["leaves"] if leaf["leaf"]}
        assert named == written.per_leaf

    # The page shows it from the job form's "Show the mix", and starts nothing.
    form = {
        "base_model": str(storage / "base"), "processes_per_node": 1, "nodes": 1, "mix": "1",
        "phase0_recipe": replay, "phase0_epochs": 1, "phase0_effective_batch_size": 2,
        "phase0_max_seq_len": 64, "phase0_max_tokens_per_device": 64,
    }  # fmt: skip
    page = client.post("/training/jobs/new/", form)
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="mix"' in text and "knowledge/leaf0" in text and "uploads/facts.jsonl" in text
    assert not TrainingJob.objects.exists()


def test_the_job_form_sets_every_phase_setting_and_shows_a_refusal(storage, operator, client, queued):
    form = {
        "base_model": str(storage / "base"), "processes_per_node": 1, "nodes": 1,
        "phase0_recipe": recipe("uploads/facts.jsonl"), "phase0_epochs": 2, "phase0_effective_batch_size": 2,
        "phase0_max_seq_len": 64, "phase0_max_tokens_per_device": 64, "phase0_precision": "bf16",
        "phase0_gradient_checkpointing": "on", "phase0_seed": 7, "phase0_save_every_samples": 100,
        "phase0_lora_rank": 4, "phase0_scheduler": "linear", "phase0_warmup_steps": 3,
    }  # fmt: skip
    client.force_login(operator)
    refused = client.post("/training/jobs/new/", {**form, "phase0_fsdp": "on", "phase0_lora_rank": 0})  # 1 process
    assert refused.status_code == 422 and "FSDP shards the model" in refused.content.decode()
    assert not TrainingJob.objects.exists()
    assert client.post("/training/jobs/new/", form).status_code == 302
    assert TrainingJob.objects.get().phases.get().config == {
        "epochs": 2, "effective_batch_size": 2, "max_seq_len": 64,
        "max_tokens_per_device": 64, "scheduler": "linear", "warmup_steps": 3, "precision": "bf16", "seed": 7,
        "save_every_samples": 100, "gradient_checkpointing": True, "lora": {"rank": 4, "alpha": 8},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "resources", "field"),
    [
        ({"fsdp": True}, {}, "phases[0].config.fsdp"),
        ({"effective_batch_size": 3}, {"processes_per_node": 2, "nodes": 2}, "phases[0].config.effective_batch_size"),
        ({"max_seq_len": 8192, "max_tokens_per_device": 8192}, {}, "phases[0].config.max_seq_len"),
        ({"lora": {"rank": 0}}, {}, "phases[0].config.lora.rank"),
    ],
)
def test_settings_the_model_or_the_processes_cannot_train_are_refused_naming_the_field(
    storage, operator, change, resources, field
):
    from labweb.errors import LabError

    phase = {"name": "p", "recipe": recipe("uploads/facts.jsonl"), "config": {**SETTINGS, **change}}
    with pytest.raises(LabError) as error:  # the tiny Mistral takes 4096 positions
        job_create(name="x", base_model=str(storage / "base"), user=operator, phases=[phase], start=False, **resources)
    assert error.value.field == field
    assert not TrainingJob.objects.exists()
    fits = {
        **phase,
        "config": {**SETTINGS, "max_seq_len": 4096, "max_tokens_per_device": 4096, "effective_batch_size": 4},
    }
    job_create(name="x", base_model=str(storage / "base"), user=operator, phases=[fits], start=False, **resources)


def test_a_worker_killed_mid_phase_loses_nothing_and_another_resumes_from_the_saved_state(
    storage, queued, settings, operator, tmp_path
):
    from training.services.nodes import nodes_reap

    env = trainer_env(storage, settings, LABWEB_TRAINING_LEASE_SECONDS="2")
    doomed = Worker("doomed", tmp_path / "doomed.log", env, queues="training", concurrency=1)
    doomed.wait_ready()
    job = job_create(
        name="survivor",
        base_model=str(storage / "base"),
        user=operator,
        phases=[
            {
                "name": "only",
                "recipe": recipe("uploads/facts.jsonl"),
                "config": {**SETTINGS, "epochs": 300, "max_steps": 40},
            }
        ],
    )
    phase = job.phases.get()
    wait_for(lambda: StepMetric.objects.filter(phase=phase).count() >= 3, timeout=120, what="3 steps", worker=doomed)
    doomed.kill()  # SIGKILL to the worker's process group; the kernel tells its torchrun to stop
    node = phase.nodes.get()
    lapsed = TrainingNode.objects.filter(pk=node.pk, lease_until__lt=Now())
    wait_for(lapsed.exists, timeout=30, what="the dead worker's lease to lapse", worker=doomed)
    assert nodes_reap() == 1
    node.refresh_from_db()
    assert node.lease_owner == ""

    heir = Worker("heir", tmp_path / "heir.log", env, queues="training", concurrency=1)
    try:
        heir.wait_ready()
        wait_for(lambda: done(job), timeout=180, what="the resumed job", worker=heir)
    finally:
        heir.kill()
    assert job.status == jobs.Status.SUCCEEDED, (job.error, heir.tail(30))
    phase.refresh_from_db()
    assert phase.step == 40 and phase.nodes.get().attempts == 2
    steps = list(StepMetric.objects.filter(phase=phase).values_list("step", flat=True))
    assert steps == list(range(1, 41))  # every step once: those repeated after the last saved state overwrote
    assert job.events.filter(message__contains="stopped answering").exists()


def test_two_nodes_each_a_worker_of_its_own_train_one_job_over_one_rendezvous(
    storage, queued, settings, operator, tmp_path
):
    """Two "machines" on one: two workers of one thread each take one rank each, and their two torchrun launches
    (one process each) meet at the c10d endpoint rank 0 published."""
    env = trainer_env(storage, settings, LABWEB_TRAINING_RENDEZVOUS_HOST="127.0.0.1")
    machines = [Worker(name, tmp_path / f"{name}.log", env, queues="training", concurrency=1) for name in "ab"]
    try:
        for machine in machines:
            machine.wait_ready()
        job = job_create(
            name="two nodes",
            base_model=str(storage / "base"),
            user=operator,
            nodes=2,
            phases=[{"name": "only", "recipe": recipe("uploads/facts.jsonl"), "config": {**SETTINGS, "epochs": 2}}],
        )
        wait_for(lambda: done(job), timeout=240, what="the two-node job", worker=machines[0])
        # Rank 0 concludes the job when its own launch ends; the other machine records its exit a moment later.
        wait_for(
            lambda: not job.phases.get().nodes.filter(exit_code__isnull=True).exists(),
            timeout=30,
            what="both nodes to record their exit",
            worker=machines[1],
        )
    finally:
        for machine in machines:
            machine.kill()
    assert job.status == jobs.Status.SUCCEEDED, (job.error, machines[0].tail(30), machines[1].tail(30))
    phase = job.phases.get()
    assert [(n.rank, n.exit_code) for n in phase.nodes.order_by("rank")] == [(0, 0), (1, 0)]
    logs = [machine.log.read_text() for machine in machines]
    assert sorted("rank 0 exited 0" in log for log in logs) == [False, True]  # one rank each
    assert sorted("rank 1 exited 0" in log for log in logs) == [False, True]
    events = read_events(Path(phase.output_dir) / "events.jsonl")[0]
    assert events[0]["event"] == "start" and events[0]["processes"] == 2
    assert phase.step == phase.total_steps == 4  # 4 samples, 2 a step, 2 epochs: one step of both nodes each
    assert StepMetric.objects.filter(phase=phase).count() == 4


def test_a_phase_or_a_question_whose_message_was_lost_is_sent_again_unless_a_worker_took_it(
    storage, operator, queued, broker
):
    job = job_create(
        name="lost", base_model=str(storage / "base"), user=operator, phases=[{"recipe": recipe("uploads/facts.jsonl")}]
    )
    phase = job.phases.get()
    checkpoint = Checkpoint.objects.create(
        phase=phase, name="c", path=str(storage / "base"), step=0, epoch=0, samples_seen=0
    )
    asked = prompt_ask(checkpoint=checkpoint, prompt="what do cows drink", user=operator)
    assert drop_queued(broker, "training") == 2  # rank 0 of the phase, and the question: gone with the broker
    reaped = jobs.reap_all()
    assert (reaped["training"], reaped["prompts"], broker.llen("training")) == (0, 0, 0)  # merely waiting
    long_ago = timezone.now() - timedelta(seconds=901)
    TrainingPhase.objects.filter(pk=phase.pk).update(sent_at=long_ago)
    CheckpointPrompt.objects.filter(pk=asked.pk).update(sent_at=long_ago)
    reaped = jobs.reap_all()
    assert (reaped["training"], reaped["prompts"]) == (1, 1) and broker.llen("training") == 2
    assert job.events.filter(phase=phase, message__contains="No worker took it in the 90").count() == 1
    assert jobs.reap_all()["training"] == 0  # its new message waits its turn

    # A worker took rank 0 (it is mixing the data, the phase still queued): never sent again this way.
    TrainingNode.objects.create(
        phase=phase, rank=0, lease_owner="alive:1", lease_until=timezone.now() + timedelta(seconds=60)
    )
    TrainingPhase.objects.filter(pk=phase.pk).update(sent_at=long_ago - timedelta(days=1))
    assert jobs.reap_all()["training"] == 0 and broker.llen("training") == 2
