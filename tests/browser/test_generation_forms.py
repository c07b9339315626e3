"""The teacher and new-run forms as an operator fills them in: the run's default target follows the teacher,
the form says what the run will cost, and a teacher limit of 0 is refused beside its field."""

import re

import pytest
from playwright.sync_api import expect

from generation.models import GenerationRun
from generation.selectors import run_estimate
from generation.services.teachers import teacher_create, teacher_ensure_default
from tests.browser.conftest import htmx_idle, sign_in

pytestmark = pytest.mark.browser


def shown_estimate(page, teacher, samples_per_leaf: int) -> None:
    expected = run_estimate(teacher=teacher, scope=GenerationRun.Scope.ALL, samples_per_leaf=samples_per_leaf)
    expect(page.locator("#estimate-items")).to_have_text(str(expected.items))
    expect(page.locator("#estimate-calls")).to_contain_text(f"{expected.calls} to {expected.most_calls}")
    return expected


def test_the_new_run_form_offers_the_chosen_teachers_target_and_says_what_the_run_costs(page, operator, curator, demo):
    embedded = teacher_ensure_default()
    server = teacher_create(user=curator, name="A vLLM server", base_url="http://127.0.0.1:9/v1", model="m")
    sign_in(page, operator, start="/generation/runs/new/")
    samples = page.locator("input[name=samples_per_leaf]")

    expect(page.locator("select[name=teacher]")).to_have_value(str(server.pk))
    expect(samples).to_have_value("30")
    shown_estimate(page, server, 30)
    expect(page.locator("#estimate-time")).to_have_text("no measurement yet")

    page.select_option("select[name=teacher]", label=embedded.name)
    expect(samples).to_have_value("2")
    htmx_idle(page)
    small = shown_estimate(page, embedded, 2)
    assert small.calls < run_estimate(teacher=embedded, samples_per_leaf=30).calls
    expect(page.locator("#estimate-basis")).to_contain_text("has not answered a run yet")

    # A number the user typed stays when the teacher changes; the estimate follows it.
    samples.fill("7")
    htmx_idle(page)
    page.select_option("select[name=teacher]", label=server.name)
    htmx_idle(page)
    expect(samples).to_have_value("7")
    shown_estimate(page, server, 7)


def test_the_teacher_form_looks_like_the_app_and_refuses_a_zero_timeout_beside_the_field(page, operator):
    sign_in(page, operator, start="/generation/teachers/new/")
    form = page.locator("#teacher-form")
    expect(form.locator("input[name=csrfmiddlewaretoken]")).to_have_count(1)
    expect(form.locator("label[for=id_name]")).to_have_text("Name")
    expect(form.locator("#id_gguf_file_helptext")).not_to_contain_text("`")
    # Number inputs are drawn like the text inputs beside them, not as the browser's bare boxes.
    style = "e => [getComputedStyle(e).borderRadius, getComputedStyle(e).paddingLeft]"
    assert form.locator("#id_timeout_seconds").evaluate(style) == form.locator("#id_name").evaluate(style)

    page.fill("#id_name", "A vLLM server")
    page.fill("#id_base_url", "http://127.0.0.1:9/v1")
    page.fill("#id_model", "m")
    page.fill("#id_timeout_seconds", "0")
    page.click("#save-teacher")
    error = page.locator("#field-timeout_seconds .field-error")
    expect(error).to_contain_text("more than 0")
    expect(page).to_have_url(re.compile(r"/generation/teachers/new/$"))
