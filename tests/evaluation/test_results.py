"""An evaluation's results as the team takes them away: two evaluations started through the API on models that an
OpenAI-compatible server serves (a phased and a stacked plan of the same data, say), compared leaf by leaf; an
unparseable judgement counted apart; the JSON and CSV exports; and the judge's API key nowhere in any of it.
The evaluations run in this process as the worker runs them (tests/evaluation/test_jobs.py runs them on one)."""

import csv
import io
import json
import logging
import re

import pytest
from rest_framework.test import APIClient

from evaluation.core.judge import judge_messages
from evaluation.models import EvaluationJob
from evaluation.services.plan import plan_job
from evaluation.services.runner import evaluation_run
from generation.services.teachers import teacher_create
from tests.evaluation.conftest import FACTS, KNOWLEDGE, SKILLS
from tests.support.teacher_server import TeacherServer

pytestmark = pytest.mark.django_db
KEY = "sk-judge-9f3c2a7d51e84b60"
FORMULA = '=HYPERLINK("http://evil.example","cows")'


@pytest.fixture
def server():
    with TeacherServer() as running:
        yield running


@pytest.fixture
def keyed_judge(server, operator):
    return teacher_create(
        user=operator, name="keyed judge", base_url=server.url, model="judge", api_key=KEY, max_concurrency=4
    )


@pytest.fixture
def api(operator):
    client = APIClient()
    client.force_authenticate(operator)
    return client


def evaluate(api, server, judge, model: str, good: set[str]) -> EvaluationJob:
    """`model` (against the base "plain") answers the leaves in `good` as their references do; the rest as the
    base does."""
    created = api.post(
        "/api/evaluations/",
        {"model": model, "base_model": "plain", "backend": "server", "server_url": server.url, "judge": judge.pk,
         "leaves": [SKILLS, KNOWLEDGE], "name": model},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    job = EvaluationJob.objects.get(pk=created.json()["id"])
    plan_job(job)
    for row in job.measurements.filter(role="checkpoint", leaf_path__in=good):
        server.script.replies.setdefault((model, row.question), row.reference)
    assert evaluation_run(job_id=job.pk) == "done", EvaluationJob.objects.get(pk=job.pk).error
    job.refresh_from_db()
    return job


@pytest.fixture
def evaluated(taxonomy, server, keyed_judge, api):
    question, reference = FACTS[0]
    # The judge gives no rating to the first skills answer that repeats its reference; "phased" answers the second
    # with what a spreadsheet would run.
    unrated = judge_messages(question=question, reference=reference, answer=reference)[-1]["content"]
    server.script.replies[("judge", unrated)] = "A fine answer, I would say."
    server.script.replies[("phased", FACTS[1][0])] = FORMULA
    phased = evaluate(api, server, keyed_judge, "phased", {SKILLS})
    stacked = evaluate(api, server, keyed_judge, "stacked", {SKILLS, KNOWLEDGE})
    return phased, stacked


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()


def test_an_unparseable_judgement_is_counted_apart_and_the_threshold_is_stated(evaluated, client, operator):
    phased, _ = evaluated
    skills = phased.leaf_results.get(leaf_path=SKILLS)
    assert (skills.judged, skills.unparseable, skills.verdict) == (8, 1, "improved")
    unrated = phased.measurements.get(role="checkpoint", leaf_path=SKILLS, key="seed-0-0")
    assert (unrated.judged, unrated.parseable, unrated.rating) == (True, False, None)
    assert skills.checkpoint_judge == pytest.approx((10 + 1 + 10) / 3)  # the unrated answer is no score
    client.force_login(operator)
    page = client.get(f"/evaluation/{phased.pk}/").content.decode()
    assert '<span id="unparseable">1</span> unparseable (counted apart)' in page
    assert "rating ±0.5, accuracy ±0.05, loss ±0.05" in page


def test_two_evaluations_compare_leaf_by_leaf_on_the_page_and_in_the_api(evaluated, client, operator, api):
    phased, stacked = evaluated
    client.force_login(operator)
    page = client.get(f"/evaluation/compare/?first={phased.pk}&second={stacked.pk}").content.decode()
    rows = dict(re.findall(r'<tr data-leaf="([^"]+)">\s*<th scope="row">[^<]+</th>\s*<td>(\w+)</td>', page))
    assert rows == {SKILLS: "improved", KNOWLEDGE: "unchanged"}
    assert re.search(rf'<tr data-leaf="{KNOWLEDGE}">.*?<td>unchanged</td>.*?<td>improved</td>', page, re.S)
    answer = api.get(f"/api/evaluations/compare/?first={phased.pk}&second={stacked.pk}").json()
    assert [(r["leaf"], r["first"]["verdict"], r["second"]["verdict"]) for r in answer] == [
        (SKILLS, "improved", "improved"),
        (KNOWLEDGE, "unchanged", "improved"),
    ]


def test_the_results_export_as_json_and_csv(evaluated, client, operator, api):
    phased, _ = evaluated
    client.force_login(operator)
    document = json.loads(text(api.get(f"/api/evaluations/{phased.pk}/export/?as=json")))
    assert json.loads(text(client.get(f"/evaluation/{phased.pk}/export.json"))) == document
    assert document["job"]["id"] == phased.pk and document["job"]["thresholds"]["judge"] == 0.5
    assert {r["leaf"]: r["verdict"] for r in document["leaves"]} == {SKILLS: "improved", KNOWLEDGE: "unchanged"}
    assert len(document["measurements"]) == phased.measurements.count() == 2 * (4 + 3)
    unrated = next(m for m in document["measurements"] if m["parseable"] is False)
    assert (unrated["leaf"], unrated["key"], unrated["role"], unrated["rating"]) == (
        SKILLS,
        "seed-0-0",
        "checkpoint",
        None,
    )

    sheet = text(client.get(f"/evaluation/{phased.pk}/export.csv"))
    assert sheet == text(api.get(f"/api/evaluations/{phased.pk}/export/?as=csv"))
    rows = list(csv.DictReader(io.StringIO(sheet)))
    assert len(rows) == len(document["measurements"])
    by_key = {(r["leaf"], r["key"], r["role"]): r for r in rows}
    assert by_key[(SKILLS, "seed-0-0", "checkpoint")]["parseable"] == "False"
    assert by_key[(SKILLS, "seed-0-0", "checkpoint")]["rating"] == ""
    assert by_key[(SKILLS, "seed-2-0", "checkpoint")]["rating"] == "10.0"
    assert by_key[(SKILLS, "seed-1-0", "checkpoint")]["answer"] == "'" + FORMULA  # never run as a formula


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)  # before the evaluations run
    return caplog


def test_the_judges_api_key_is_never_rendered_exported_or_logged(logs, evaluated, client, operator, api):
    phased, stacked = evaluated
    client.force_login(operator)
    answers = [
        client.get("/evaluation/"),
        client.get(f"/evaluation/{phased.pk}/"),
        client.get(f"/evaluation/{phased.pk}/answers/"),
        client.get(f"/evaluation/{phased.pk}/export.csv"),
        client.get(f"/evaluation/compare/?first={phased.pk}&second={stacked.pk}"),
        client.get("/operations/"),
        api.get("/api/evaluations/"),
        api.get(f"/api/evaluations/{phased.pk}/"),
        api.get(f"/api/evaluations/{phased.pk}/measurements/"),
        api.get(f"/api/evaluations/{phased.pk}/export/?as=json"),
    ]
    for response in answers:
        assert KEY not in text(response)
    assert KEY not in logs.text
