"""A model under test on an OpenAI-compatible server that asks for an API key (`vllm serve --api-key`), judged by a
teacher whose server asks for its own: each key is sent as the bearer token its server wants; a key refused, or
none sent, fails the evaluation at once with an error that names the server and says the key was refused, and the
playground says the same. The evaluation's key is write-only, as a teacher's: in no page, API answer or log. The
evaluations run in this process as the worker runs them (test_jobs.py runs them on one)."""

import logging

import pytest
from rest_framework.test import APIClient

from evaluation.models import EvaluationJob
from evaluation.services.runner import evaluation_run
from generation.services.teachers import teacher_create, teacher_update
from tests.evaluation.conftest import FACTS, SKILLS
from tests.support.teacher_server import TeacherServer

pytestmark = pytest.mark.django_db
KEY = "sk-model-4e1d7b9a20c35f68"
JUDGE_KEY = "sk-judge-0b8e61f2c7d94a35"


@pytest.fixture
def model_server():
    with TeacherServer() as server:
        server.script.api_key = KEY
        yield server


@pytest.fixture
def keyed_judge_server():
    with TeacherServer() as server:
        server.script.api_key = JUDGE_KEY
        yield server


def _judge(server, operator, api_key: str):
    # "text": no probe of the server at creation, so the only requests a server sees are the evaluation's.
    return teacher_create(
        user=operator, name="keyed judge", base_url=server.url, model="judge", api_key=api_key, answer_format="text"
    )


@pytest.fixture
def operator_api(operator):
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def _start(api, server, judge, **key) -> EvaluationJob:
    created = api.post(
        "/api/evaluations/",
        {"model": "good", "base_model": "plain", "backend": "server", "server_url": server.url, "judge": judge.pk,
         "leaves": [SKILLS], **key},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    assert "server_api_key" not in created.json()
    assert created.json()["has_server_api_key"] is bool(key.get("server_api_key"))
    return EvaluationJob.objects.get(pk=created.json()["id"])


def _text(response) -> str:
    assert response.status_code == 200, response.status_code
    return b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()


def test_an_evaluation_sends_the_servers_key_and_the_judges_and_never_shows_them(
    logs, taxonomy, model_server, keyed_judge_server, operator, operator_api, client
):
    judge = _judge(keyed_judge_server, operator, JUDGE_KEY)
    job = _start(operator_api, model_server, judge, server_api_key=KEY)
    assert evaluation_run(job_id=job.pk) == "done", EvaluationJob.objects.get(pk=job.pk).error
    assert job.measurements.filter(answered=True, judged=True).count() == 2 * len(FACTS)
    assert set(model_server.script.bearers) == {KEY} and set(keyed_judge_server.script.bearers) == {JUDGE_KEY}
    assert model_server.script.statuses[401] == keyed_judge_server.script.statuses[401] == 0

    client.force_login(operator)
    page = client.get(f"/evaluation/{job.pk}/")
    assert "(with an API key)" in _text(page)
    answers = [
        page,
        client.get("/evaluation/"),
        client.get(f"/evaluation/{job.pk}/answers/"),
        client.get(f"/evaluation/{job.pk}/export.json"),
        client.get("/operations/"),
        operator_api.get("/api/evaluations/"),
        operator_api.get(f"/api/evaluations/{job.pk}/"),
        operator_api.get(f"/api/evaluations/{job.pk}/events/"),
        operator_api.get(f"/api/evaluations/{job.pk}/export/?as=json"),
    ]
    for response in answers:
        assert KEY not in _text(response)
    assert KEY not in logs.text and JUDGE_KEY not in logs.text


@pytest.mark.parametrize(
    ("sent", "refused"),
    [("", "refused the request, sent without an API key"), ("sk-wrong-key", "refused the API key it was sent")],
)
def test_a_model_server_that_refuses_the_key_fails_the_evaluation_naming_it(
    logs, taxonomy, model_server, judge, operator_api, sent, refused
):
    job = _start(operator_api, model_server, judge, server_api_key=sent)
    assert evaluation_run(job_id=job.pk) == "failed"
    error = operator_api.get(f"/api/evaluations/{job.pk}/").json()["error"]
    assert error == (
        f"The model server at {model_server.url} {refused} (HTTP 401: Unauthorized). Start the evaluation again with "
        "the server's key (server API key)."
    )
    assert model_server.script.statuses[401] >= 1 and model_server.script.statuses[200] == 0
    assert not job.measurements.filter(answered=True).exists()
    assert not [r for r in logs.records if r.exc_info], "a refused key is an error to state, not a traceback"


def test_a_judge_that_refuses_its_key_stops_the_evaluation_and_resume_goes_on_with_the_key_fixed(
    taxonomy, model_server, keyed_judge_server, operator, operator_api
):
    judge = _judge(keyed_judge_server, operator, "sk-stale-key")
    job = _start(operator_api, model_server, judge, server_api_key=KEY)
    assert evaluation_run(job_id=job.pk) == "failed"
    job.refresh_from_db()
    assert job.error == (
        f"The judge keyed judge at {keyed_judge_server.url} refused the API key it was sent (HTTP 401: "
        "Unauthorized). Set the teacher's API key (Generation → Teachers), then resume."
    )
    assert keyed_judge_server.script.statuses[200] == 0
    answered = job.measurements.filter(answered=True).count()
    assert answered >= 1  # the model's answers are kept: resume does not ask them again

    teacher_update(teacher=judge, user=operator, api_key=JUDGE_KEY)
    assert operator_api.post(f"/api/evaluations/{job.pk}/resume/").status_code == 200
    calls = model_server.script.statuses[200]
    assert evaluation_run(job_id=job.pk) == "done", EvaluationJob.objects.get(pk=job.pk).error
    assert model_server.script.statuses[200] - calls == 2 * len(FACTS) - answered
    assert not job.measurements.filter(judged=False).exists()


@pytest.mark.parametrize(
    ("api_key", "refused"),
    [
        (KEY, None),
        ("", "refused the request, sent without an API key"),
        ("sk-wrong-key", "refused the API key it was sent"),
    ],
)
def test_the_playground_sends_a_teachers_key_and_says_when_it_is_refused(
    model_server, operator, client, api_key, refused
):
    teacher = teacher_create(
        user=operator, name="keyed", base_url=model_server.url, model="m", api_key=api_key, answer_format="text"
    )
    client.force_login(operator)
    response = client.post(
        "/evaluation/playground/stream/", {"model": f"teacher:{teacher.pk}", "prompt": "Say something."}
    )
    answer = _text(response)
    if refused is None:
        assert answer.startswith("Here is a careful answer:"), answer
        assert model_server.script.bearers == [KEY]
    else:
        assert answer == (
            f"\n[The teacher keyed at {model_server.url} {refused} (HTTP 401: Unauthorized). Set its API key on the "
            "Teachers page.]"
        )


def test_the_form_takes_the_key_write_only_and_refuses_it_for_the_local_backend(
    taxonomy, model_server, judge, operator, client
):
    client.force_login(operator)
    form = {"model": "good", "base_model": "plain", "server_url": model_server.url, "server_api_key": KEY,
            "judge": judge.pk, "leaves": SKILLS, "judge_threshold": 0.5, "choice_threshold": 0.05,
            "loss_threshold": 0.05, "max_new_tokens": 16}  # fmt: skip
    refused = client.post("/evaluation/new/", {**form, "backend": "local"})
    assert refused.status_code == 422
    page = refused.content.decode()
    assert "An API key is sent only to a server" in page and KEY not in page
    assert not EvaluationJob.objects.exists()

    created = client.post("/evaluation/new/", {**form, "backend": "server"})
    assert created.status_code == 302
    assert EvaluationJob.objects.get().server_api_key == KEY
