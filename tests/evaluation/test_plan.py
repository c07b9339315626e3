"""What an evaluation after a later phase asks: the earlier phases' evaluation sets again, their leaves and the
held-out samples their own dataset builds kept out, beside the later phase's."""

import json

import pytest

from evaluation.services.jobs import evaluate_after_phase
from evaluation.services.plan import held_out_by_leaf, plan_job
from labweb.jobs import Status
from tests.evaluation.conftest import HELD_OUT, KNOWLEDGE, SKILLS, record
from training.models import Checkpoint, Dataset, DatasetFile, TrainingJob, TrainingPhase

pytestmark = pytest.mark.django_db
LATER = ("what do bees make", "bees make honey")


@pytest.fixture
def second_build(storage, curator):
    """A later build, of the skills leaf only, with a held-out sample of its own."""
    folder = storage / "datasets" / "dataset-2"
    folder.mkdir(parents=True)
    dataset = Dataset.objects.create(
        name="later facts",
        plan="phased",
        system_prompt="",
        tokenizer=str(storage / "base"),
        status=Status.SUCCEEDED,
        per_leaf={SKILLS: {"skills": 1, "held_out": 1}},
        folder=str(folder),
        created_by=curator,
    )
    for role, rows in (
        ("skills", [record("what is ice", "ice is cold", SKILLS, 30)]),
        ("held_out", [record(*LATER, SKILLS, 31)]),
    ):
        path = folder / f"{role}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        DatasetFile.objects.create(
            dataset=dataset, role=role, path=str(path), sha256="0" * 64, samples=len(rows), tokens=1, bytes=1
        )
    return dataset


def test_after_a_later_phase_the_earlier_phases_held_out_samples_are_asked_again(
    taxonomy, storage, second_build, judge, settings
):
    settings.LABWEB_EVALUATION_JUDGE = judge.name
    job = TrainingJob.objects.create(name="two builds", base_model=str(storage / "base"), output_dir=str(storage))
    phases = [
        TrainingPhase.objects.create(
            job=job, order=n, name=name, recipe=f"datasets:\n- path: datasets/{folder}\n", config={}
        )
        for n, (name, folder) in enumerate([("first", "dataset-1/all.jsonl"), ("second", "dataset-2/skills.jsonl")])
    ]
    for phase in phases:
        Checkpoint.objects.create(
            phase=phase, name="epoch-001", path=str(storage / "base"), step=1, epoch=1, samples_seen=1
        )

    evaluation = evaluate_after_phase(phases[1])
    assert evaluation.sets == {"first": [SKILLS, KNOWLEDGE], "second": [SKILLS]}
    plan_job(evaluation)
    held = evaluation.measurements.filter(role="checkpoint", key__startswith="held-")
    # The first build's held-out samples (one a leaf) and the second build's (the skills leaf): none dropped.
    assert sorted(held.values_list("leaf_path", "question")) == sorted(
        [(SKILLS, HELD_OUT[0]), (KNOWLEDGE, HELD_OUT[0]), (SKILLS, LATER[0])]
    )
    assert {leaf: len(samples) for leaf, samples in held_out_by_leaf(evaluation).items()} == {SKILLS: 2, KNOWLEDGE: 1}
