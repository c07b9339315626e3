"""What the new-run form says a run costs is what the run then costs."""

from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from generation.models import GenerationRun, Sample
from generation.selectors import run_estimate
from generation.services.runs import run_create

Scope = GenerationRun.Scope


def test_the_estimate_counts_the_work_items_and_teacher_calls_a_run_then_makes(eager, teacher, curator, demo, script):
    settings = {"scope": Scope.ALL, "samples_per_leaf": 5, "config": {"questions_per_call": 4}}
    before = run_estimate(teacher=teacher, **settings)
    assert before.seconds_per_call is None and before.duration == ""

    run = run_create(teacher=teacher, user=curator, **settings)

    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED
    # The scripted teacher accepts every candidate, so every item meets its target in its first round.
    assert before.items == run.items.count()
    assert before.calls == script.requests
    assert before.most_calls == before.calls * run.config["max_rounds"]

    after = run_estimate(teacher=teacher, **settings)
    assert (after.items, after.calls) == (before.items, before.calls)
    assert after.measured_calls == script.requests
    assert after.seconds_per_call > 0 and after.duration


def test_the_estimate_follows_the_samples_per_leaf_and_the_chosen_leaves(teacher, demo):
    haiku = demo["compositional_skills/writing/freeform/haiku"]
    one = run_estimate(teacher=teacher, scope=Scope.SELECTED, leaf_ids=[haiku.pk], samples_per_leaf=1)
    more = run_estimate(teacher=teacher, scope=Scope.SELECTED, leaf_ids=[haiku.pk], samples_per_leaf=30)
    assert one.items == 1
    assert more.items == len(haiku.seeds.all())
    assert more.calls > one.calls


def test_the_run_says_what_a_kept_sample_cost_in_teacher_calls_and_tokens(
    eager, teacher, curator, operator, demo, script
):
    script.reject_question_every = 2  # about half the questions rejected: a kept sample costs more than its chain
    run = run_create(teacher=teacher, user=curator, scope=Scope.ALL, samples_per_leaf=5)
    kept = Sample.objects.filter(run=run).count()
    assert kept > 0
    api = APIClient()
    api.force_authenticate(operator)
    progress = api.get(f"/api/runs/{run.pk}/").json()["progress"]
    per_kept = progress["per_kept_sample"]
    assert per_kept["calls"] == round(script.requests / kept, 2) > 3  # every call the server saw
    tokens = progress["teacher"]["prompt_tokens"], progress["teacher"]["completion_tokens"]
    assert (per_kept["prompt_tokens"], per_kept["completion_tokens"]) == tuple(round(n / kept, 1) for n in tokens)
    assert all(tokens)
    browser = Client()
    browser.force_login(operator)
    page = browser.get(reverse("generation:run_detail", args=[run.pk])).content.decode()
    assert f'data-stat="calls_per_kept">{per_kept["calls"]}<' in page
