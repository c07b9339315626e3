"""An evaluation as the team reads it: the taxonomy tree coloured by each leaf's verdict, the table of base against
checkpoint, and a leaf's answers with the judge's ratings and rationale side by side. The models under test and
the judge are the scripted server; the evaluation runs in this process (tests/evaluation runs one on a worker)."""

import pytest
from playwright.sync_api import expect

from evaluation.models import EvaluationJob, Measurement
from evaluation.services.jobs import evaluation_create
from evaluation.services.plan import plan_job
from evaluation.services.runner import evaluation_run
from generation.services.teachers import teacher_create
from tests.browser.conftest import open_folder, sign_in
from tests.support.teacher_server import TeacherServer

pytestmark = pytest.mark.browser
HAIKU = "compositional_skills/writing/freeform/haiku"
ARITHMETIC = "foundational_skills/reasoning/arithmetic_word_problems"


@pytest.fixture
def evaluated(demo, operator):
    """The checkpoint ("good") answers the haiku leaf as its references do and the arithmetic leaf badly; the base
    ("plain") the other way round."""
    with TeacherServer() as server:
        judge = teacher_create(user=operator, name="judge", base_url=server.url, model="judge", max_concurrency=4)
        job = evaluation_create(
            user=operator, model="good", base_model="plain", backend="server", server_url=server.url, judge=judge,
            leaves=[HAIKU, ARITHMETIC], start=False,
        )  # fmt: skip
        plan_job(job)
        for row in Measurement.objects.filter(job=job):
            better = "good" if row.leaf_path == HAIKU else "plain"
            server.script.replies[(better, row.question)] = row.reference
        assert evaluation_run(job_id=job.pk) == "done"
    job.refresh_from_db()
    return job


def test_the_tree_is_coloured_by_verdict_and_the_answers_read_side_by_side(page, operator, evaluated):
    sign_in(page, operator)
    skills = page.locator('details[data-path="compositional_skills"] > summary .counter-evaluation')
    expect(skills.locator(".counter-evaluation-improved")).to_have_attribute("data-value", "1")
    expect(skills.locator(".counter-evaluation-regressed")).to_have_count(0)
    foundational = page.locator('details[data-path="foundational_skills"] > summary .counter-evaluation')
    expect(foundational.locator(".counter-evaluation-regressed")).to_have_attribute("data-value", "1")
    open_folder(page, "compositional_skills")
    open_folder(page, "compositional_skills/writing")
    open_folder(page, "compositional_skills/writing/freeform")
    leaf = page.locator(".tree-file", has=page.locator('a.tree-leaf:text-is("haiku")'))
    expect(leaf.locator(".counter-evaluation-improved")).to_be_visible()

    page.goto(f"/evaluation/{evaluated.pk}/")
    expect(page.locator("#evaluation-status")).to_have_text("succeeded")
    expect(page.locator(f'#leaf-results tr[data-leaf="{HAIKU}"]')).to_have_attribute("data-verdict", "improved")
    expect(page.locator(f'#leaf-results tr[data-leaf="{ARITHMETIC}"]')).to_have_attribute("data-verdict", "regressed")

    page.locator(f'#leaf-results tr[data-leaf="{HAIKU}"] a').click()
    first = page.locator(".side-by-side").first
    expect(first).to_have_attribute("data-leaf", HAIKU)
    reference = first.locator(".reference").inner_text().removeprefix("Reference:").strip()
    checkpoint = first.locator('.answer-side[data-role="checkpoint"]')
    base = first.locator('.answer-side[data-role="base"]')
    expect(checkpoint.locator(".model-answer")).to_have_text(reference)
    expect(checkpoint.locator("[data-rating]")).to_have_attribute("data-rating", "10.0")
    expect(checkpoint.locator(".rationale")).to_contain_text("of the reference's")
    expect(base.locator(".model-answer")).to_contain_text("Here is a careful answer")
    assert float(base.locator("[data-rating]").get_attribute("data-rating")) < 10
    assert EvaluationJob.objects.get(pk=evaluated.pk).leaf_results.filter(latest=True).count() == 2
