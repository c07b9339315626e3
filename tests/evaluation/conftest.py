"""An evaluation's world: two leaves whose seeds are the facts a tiny model is trained on, a dataset build that
holds one of them out, the scripted judge, and a worker of the training queue."""

import json

import pytest
from django.db import connection

from tests.support.teacher_server import TeacherScript, TeacherServer
from tests.support.tiny_model import build_tiny_model
from tests.support.worker import Worker, worker_env

SKILLS = "compositional_skills/facts/nature"
KNOWLEDGE = "knowledge/science/animals"
FACTS = [
    ("what colour is the sky", "the sky is blue"),
    ("what do cows drink", "cows drink water"),
    ("how many legs has a spider", "a spider has eight legs"),
    ("where do fish live", "fish live in the sea"),
]
HELD_OUT = ("what do birds eat", "birds eat seeds")
DOCUMENT = (
    "Cows are large animals that drink water and eat grass all day long. "
    "A spider is a small animal that has eight legs and spins a web. "
    "Fish are animals that live in the sea and breathe with gills under water. "
    "Birds are animals with feathers that eat seeds and fly over the fields."
)
JUDGE = "scripted judge"


def record(question: str, answer: str, leaf: str, sample: int) -> dict:
    return {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "metadata": {"sample": sample, "leaf": leaf, "kind": "skills", "run": None},
        "unmask": False,
    }


@pytest.fixture
def taxonomy(curator):
    from curation.services import document_add, leaf_create, seed_add

    skills = leaf_create(path=SKILLS, user=curator)
    for question, answer in FACTS:
        skills.refresh_from_db()
        seed_add(leaf=skills, user=curator, expected_revision=None, question=question, answer=answer)
    knowledge = leaf_create(path=KNOWLEDGE, user=curator)
    seed_add(
        leaf=knowledge,
        user=curator,
        expected_revision=None,
        context="animals and what they do",
        questions_and_answers=[{"question": q, "answer": a} for q, a in FACTS[1:]],
    )
    document_add(leaf=knowledge, user=curator, expected_revision=None, name="animals.md", content=DOCUMENT)
    return skills, knowledge


@pytest.fixture
def storage(tmp_path, settings, curator):
    """The training storage: a tiny base model, and a build's files (one fact per leaf held out)."""
    from labweb.jobs import Status
    from training.models import Dataset, DatasetFile

    root = tmp_path / "training"
    settings.LABWEB_TRAINING_DIR = str(root)
    words = [f"{q} {a}" for q, a in [*FACTS, HELD_OUT]] + [DOCUMENT, "animals and what they do"]
    build_tiny_model(root / "base", words)
    folder = root / "datasets" / "dataset-1"
    folder.mkdir(parents=True)
    trained = [record(q, a, SKILLS, n) for n, (q, a) in enumerate(FACTS)]
    trained += [record(q, a, KNOWLEDGE, 10 + n) for n, (q, a) in enumerate(FACTS[1:])]
    held = [record(*HELD_OUT, SKILLS, 20), record(*HELD_OUT, KNOWLEDGE, 21)]
    dataset = Dataset.objects.create(
        name="facts",
        plan="stacked",
        system_prompt="",
        tokenizer=str(root / "base"),
        status=Status.SUCCEEDED,
        per_leaf={SKILLS: {"all": 4, "held_out": 1}, KNOWLEDGE: {"all": 3, "held_out": 1}},
        folder=str(folder),
        created_by=curator,
    )
    for role, records in (("all", trained), ("held_out", held)):
        path = folder / f"{role}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        DatasetFile.objects.create(
            dataset=dataset, role=role, path=str(path), sha256="0" * 64, samples=len(records), tokens=1, bytes=1
        )
    return root


@pytest.fixture
def judge_server():
    script = TeacherScript()
    with TeacherServer(script) as server:
        yield server


@pytest.fixture
def judge(judge_server, operator):
    from generation.services.teachers import teacher_create

    return teacher_create(user=operator, name=JUDGE, base_url=judge_server.url, model="judge", max_concurrency=4)


def start_evaluator(storage, settings, tmp_path, *, beat: bool = False, **extra: str) -> Worker:
    """A worker of the training and default queues on the test's database, its storage and its judge."""
    env = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
        LABWEB_TRAINING_DIR=str(storage),
        OMP_NUM_THREADS="1",
        LABWEB_EVALUATION_JUDGE=JUDGE,
        LABWEB_TEACHER_ATTEMPTS="1",
        **extra,
    )
    process = Worker("evaluator", tmp_path / "worker.log", env, queues="training,default", concurrency=2, beat=beat)
    process.wait_ready()
    return process


@pytest.fixture
def worker(storage, queued, settings, tmp_path, judge):
    process = start_evaluator(storage, settings, tmp_path)
    yield process
    process.kill()
