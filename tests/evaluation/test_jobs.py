"""Evaluations end to end: a tiny model trained in two phases on a real worker, evaluated after each phase against
its base by the scripted judge (one judgement in seven unparseable); then an evaluation whose judge is down,
resumed once it answers, paying for no answer twice; and one whose message the broker lost, sent again by the
reaper and measured once."""

import pytest
from rest_framework.test import APIClient

from evaluation.models import EvaluationJob, LeafResult, Measurement
from evaluation.services.jobs import evaluation_create, evaluation_resume
from evaluation.services.results import tree_counts
from generation.services.teachers import teacher_create, teacher_update
from labweb import jobs
from tests.evaluation.conftest import KNOWLEDGE, SKILLS, start_evaluator
from tests.support.worker import drop_queued, reaped, reaper_rounds, wait_for
from training.models import Checkpoint
from training.services.jobs import job_create

pytestmark = pytest.mark.django_db(transaction=True)
SETTINGS = {
    "epochs": 20,
    "learning_rate": 0.02,
    "effective_batch_size": 8,
    "max_seq_len": 64,
    "max_tokens_per_device": 256,
    "scheduler": "constant",
    "seed": 3,
}


def finished(job):
    job.refresh_from_db()
    return not job.is_active and job


def test_each_phase_is_evaluated_against_the_base_per_leaf_with_earlier_phases_sets_again(
    worker, storage, taxonomy, judge, judge_server, operator
):
    judge_server.script.garbage_every = 7
    recipe = "datasets:\n- path: datasets/dataset-1/all.jsonl\n  sampling_size: 1.0\n"
    training = job_create(
        name="facts",
        base_model=str(storage / "base"),
        user=operator,
        phases=[
            {"name": "first", "recipe": recipe, "config": SETTINGS},
            {"name": "second", "recipe": recipe, "config": {**SETTINGS, "epochs": 1}},
        ],
    )
    wait_for(lambda: finished(training), timeout=240, what="the training job", worker=worker)
    assert training.status == jobs.Status.SUCCEEDED, training.error
    evaluations = EvaluationJob.objects.filter(training_job=training).order_by("phase__order")
    wait_for(
        lambda: evaluations.count() == 2 and all(finished(e) for e in evaluations),
        timeout=240,
        what="both evaluations",
        worker=worker,
    )
    first, second = evaluations
    assert first.status == second.status == jobs.Status.SUCCEEDED, (first.error, second.error)
    assert first.judge == judge and first.base_model == str(storage / "base")
    # No GPU here: the first phase's evaluation waited for the second phase, the second for the first evaluation.
    assert first.started_at >= training.finished_at and second.started_at >= first.finished_at
    assert first.checkpoint == Checkpoint.objects.filter(phase=first.phase).order_by("-step").first()
    assert first.sets == {"first": [SKILLS, KNOWLEDGE]}
    assert second.sets == {"first": [SKILLS, KNOWLEDGE], "second": [SKILLS, KNOWLEDGE]}  # forgetting shows

    judged = Measurement.objects.filter(job=first, kind="judged")
    # 4 skills seeds + 3 knowledge pairs + 1 held-out question per leaf, for each model.
    assert judged.count() == 2 * (4 + 3 + 2) and not judged.filter(answered=False).exists()
    assert not judged.filter(judged=False).exists()
    requests = [e for e in judge_server.script.exchanges if "Rate the assistant" in e["prompt"]]
    assert len(requests) == 2 * judged.count()  # both evaluations, each judgement asked once
    unparseable = Measurement.objects.filter(kind="judged", judged=True, parseable=False).count()
    assert unparseable == len(requests) // 7 and unparseable > 0
    assert not Measurement.objects.filter(kind="judged", parseable=False, rating__isnull=False).exists()

    skills = LeafResult.objects.get(job=first, leaf_path=SKILLS)
    assert skills.checkpoint_judge > skills.base_judge + 0.5 and skills.verdict == "improved"
    assert skills.base_loss > 0 and skills.checkpoint_loss > 0  # the held-out sample, on both models
    knowledge = LeafResult.objects.get(job=first, leaf_path=KNOWLEDGE)
    choices = Measurement.objects.filter(job=first, kind="choice", leaf_path=KNOWLEDGE)
    assert choices.filter(role="base").count() == choices.filter(role="checkpoint").count() >= 5
    assert not choices.filter(picked__isnull=True).exists()
    assert knowledge.checkpoint_accuracy is not None and knowledge.base_accuracy is not None
    assert LeafResult.objects.get(job=first, leaf_path=SKILLS).unparseable + knowledge.unparseable == (
        Measurement.objects.filter(job=first, judged=True, parseable=False).count()
    )

    # The tree shows the latest evaluation of each leaf: the second one.
    assert not LeafResult.objects.filter(job=first, latest=True).exists()
    latest = {r.leaf_id: r.verdict for r in LeafResult.objects.filter(job=second)}
    counts = tree_counts(list(latest))
    assert counts == {leaf: {verdict: 1} for leaf, verdict in latest.items() if verdict != "unmeasured"}

    # A judge that is down: the evaluation fails naming it, keeps every answer, and resumes once it answers.
    down = teacher_create(user=operator, name="down", base_url="http://127.0.0.1:9/v1", model="judge")
    again = evaluation_create(user=operator, checkpoint=first.checkpoint, judge=down, leaves=[SKILLS])
    wait_for(lambda: finished(again), timeout=120, what="the evaluation with a judge that is down", worker=worker)
    assert again.status == jobs.Status.FAILED
    # Stopped after 5 failures in a row, or (when every call was out before 5 came back) at the end; either way:
    assert "127.0.0.1:9" in again.error and "resume once the judge answers" in again.error
    answered = dict(again.measurements.filter(answered=True).values_list("pk", "answer"))
    assert answered and not again.measurements.filter(judged=True).exists()

    def judgements() -> int:  # saving the teacher probes it again: that exchange is not a judgement
        return sum("Rate the assistant" in exchange["prompt"] for exchange in judge_server.script.exchanges)

    before = judgements()
    teacher_update(teacher=down, user=operator, base_url=judge_server.url)
    evaluation_resume(job=again, user=operator)
    wait_for(lambda: finished(again), timeout=120, what="the resumed evaluation", worker=worker)
    assert again.status == jobs.Status.SUCCEEDED, again.error
    assert dict(again.measurements.filter(pk__in=answered).values_list("pk", "answer")) == answered
    assert judgements() - before == again.measurements.filter(kind="judged").count()


def test_an_evaluation_job_whose_message_was_lost_is_sent_again_and_measured_once(
    storage, taxonomy, judge, judge_server, operator, queued, broker, settings, tmp_path
):
    api = APIClient()
    api.force_authenticate(operator)
    body = {"model": str(storage / "base"), "base_model": "", "judge": judge.pk, "leaves": [SKILLS]}
    created = api.post("/api/evaluations/", {**body, "max_new_tokens": 8}, format="json")
    assert created.status_code == 201, created.json()
    job = EvaluationJob.objects.get(pk=created.json()["id"])
    assert drop_queued(broker, "training") == 1  # the job's message, gone with the broker's memory

    worker = start_evaluator(
        storage, settings, tmp_path, beat=True, LABWEB_REAP_SECONDS="1", LABWEB_QUEUED_RESEND_SECONDS="2"
    )
    try:
        wait_for(lambda: finished(job), timeout=180, what="the evaluation sent again", worker=worker)
        rounds = reaper_rounds(worker)
        wait_for(reaped(worker, rounds + 3), timeout=30, what="three more reaper rounds", worker=worker)
    finally:
        worker.kill()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.resends) == (jobs.Status.SUCCEEDED, 1, 1), job.error
    resent = job.events.filter(level="warning", message__startswith="No worker took it in the ")
    assert resent.count() == 1 and "sent again (1 time)" in resent.get().message
    judged = Measurement.objects.filter(job=job, kind="judged")
    assert judged.count() == 4 and not judged.filter(judged=False).exists()  # its 4 seeds, on the model alone
    requests = [e for e in judge_server.script.exchanges if "Rate the assistant" in e["prompt"]]
    assert len(requests) == judged.count()  # each judgement asked once
    assert job.events.filter(message__startswith="Planned").count() == 1
