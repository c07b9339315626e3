"""What the new-run form says a run costs is what the run then costs."""

from generation.models import GenerationRun
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
