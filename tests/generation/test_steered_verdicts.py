"""A verdict LabWeb chose (the local teacher's steering) rather than the judge wrote is marked on the sample,
and shown as such in the API, on the sample's page and in review."""

import pytest

from generation.models import Sample
from generation.sdg.pipelines import GeneratedSample, Unit
from generation.sdg.teachers import CachedTeacher, Completion
from tests.generation.test_sdg_core import run_unit
from tests.support.sdg import HAIKU, MemoryCache, demo_leaf


class PairJudgeSteered:
    """A teacher whose pair judge writes no verdict line of its own, so one is supplied (as the local one does)."""

    model, max_concurrency, steers = "steering-stub", 1, True

    async def complete(self, messages, sampling, stats=None, shape=None):
        prompt = messages[-1]["content"]
        if "Write" in prompt and "[Question]" in prompt:
            return Completion(text="[Question]\nName a colour of the sea.\n[End]\n[Question]\nDescribe a dune.\n[End]")
        if "Is this instruction clear" in prompt:
            return Completion(text="Clear.\nScore: 1")
        if "Rate the response" in prompt:
            return Completion(text="It rambles.\nScore: 3", steered=True)
        return Completion(text="A blue-green one.")


def test_a_sample_names_the_judges_whose_verdict_labweb_chose():
    cache = MemoryCache()
    teacher = CachedTeacher(teacher=PairJudgeSteered(), lookup=cache.lookup, store=cache.store)
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=2, seed_index=0), teacher)
    assert result.kept == len(samples) == 2
    assert [sample.steered_verdicts for sample in samples] == [["pair_judge"], ["pair_judge"]]


@pytest.mark.django_db(transaction=True)
def test_the_api_the_sample_page_and_review_show_a_verdict_labweb_chose(eager, teacher, curator, demo):
    from django.contrib.auth.models import Group
    from rest_framework.test import APIClient

    from generation.services.runs import run_create

    run = run_create(teacher=teacher, user=curator, scope="selected", leaf_ids=[demo[HAIKU].pk], samples_per_leaf=2)
    steered, plain = Sample.objects.filter(run=run).order_by("pk")[:2]
    Sample.objects.filter(pk=steered.pk).update(steered_verdicts=["question_judge"])
    curator.groups.add(Group.objects.get(name="reviewer"), Group.objects.get(name="operator"))
    api = APIClient()
    api.force_authenticate(curator)
    rows = api.get("/api/samples/", {"run": run.pk, "verdict_steered": "true"}).json()["results"]
    assert [(row["id"], row["steered_verdicts"], row["verdict_steered"]) for row in rows] == [
        (steered.pk, ["question_judge"], True)
    ]
    rows = api.get("/api/samples/", {"run": run.pk, "verdict_steered": "false"}).json()["results"]
    assert steered.pk not in {row["id"] for row in rows} and plain.pk in {row["id"] for row in rows}
    assert api.get(f"/api/samples/{plain.pk}/").json()["verdict_steered"] is False

    from django.test import Client

    client = Client()
    client.force_login(curator)
    for url in ("/generation/samples/{}/", "/review/samples/{}/"):
        assert (
            "Verdict chosen by LabWeb, not written by the judge: question_judge"
            in client.get(url.format(steered.pk)).content.decode()
        )
        assert "Verdict chosen by LabWeb" not in client.get(url.format(plain.pk)).content.decode()


def test_a_generated_sample_has_no_steered_verdict_unless_one_is_named():
    sample = GeneratedSample("k", "q", "r", None, [0], None, {}, {}, {}, [])
    assert sample.steered_verdicts == []
