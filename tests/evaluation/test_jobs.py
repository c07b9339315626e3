"""Evaluations end to end: a tiny model trained in two phases on a real worker, evaluated after each phase against
its base by the scripted judge (one judgement in seven unparseable); then an evaluation whose judge is down,
resumed once it answers, paying for no answer twice."""

import pytest

from evaluation.models import EvaluationJob, LeafResult, Measurement
from evaluation.services.jobs import evaluation_create, evaluation_resume
from evaluation.services.results import tree_counts
from generation.services.teachers import teacher_create, teacher_update
from labweb import jobs
from tests.evaluation.conftest import KNOWLEDGE, SKILLS
from tests.support.worker import wait_for
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
