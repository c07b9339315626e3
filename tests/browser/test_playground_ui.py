"""The chat playground: a leaf's seed question offered as the prompt, answered side by side by a checkpoint on the
local backend and by a teacher's server, both answers streamed into their columns; a second turn carries the
conversation on."""

import pytest
from playwright.sync_api import expect

from generation.services.teachers import teacher_create
from tests.browser.conftest import sign_in
from tests.support.teacher_server import TeacherServer
from tests.support.tiny_model import build_tiny_model
from training.models import Checkpoint, TrainingJob, TrainingPhase

pytestmark = pytest.mark.browser
HAIKU = "compositional_skills/writing/freeform/haiku"


@pytest.fixture
def models(demo, operator, tmp_path, settings):
    settings.LABWEB_PROMPT_MAX_TOKENS = 6
    folder = build_tiny_model(tmp_path / "checkpoint", ["a tiny model that writes words"], ends=False)
    job = TrainingJob.objects.create(name="tiny", base_model=folder, output_dir=str(tmp_path))
    phase = TrainingPhase.objects.create(job=job, order=0, name="only", recipe="", config={})
    checkpoint = Checkpoint.objects.create(phase=phase, name="epoch-001", path=folder, step=1, epoch=1, samples_seen=1)
    with TeacherServer() as server:
        teacher = teacher_create(user=operator, name="vllm box", base_url=server.url, model="served")
        yield checkpoint, teacher, server


def test_two_models_answer_a_seed_question_side_by_side_streaming(page, operator, models):
    checkpoint, teacher, server = models
    sign_in(page, operator, start="/evaluation/playground/")
    page.select_option("#left", f"checkpoint:{checkpoint.pk}")
    page.select_option("#right", f"teacher:{teacher.pk}")
    page.select_option("#leaf", HAIKU)
    page.click("#show-prompts")
    page.locator(".seed-prompt").first.click()
    question = page.locator("#prompt").input_value()
    assert question  # the leaf's first seed question
    page.click("#send")

    left, right = page.locator("#chat-left"), page.locator("#chat-right")
    for column in (left, right):
        expect(column.locator(".turn.user")).to_have_text(question)
        expect(column.locator(".turn.assistant")).to_have_attribute("data-streaming", "false")
    expect(left.locator(".turn.assistant")).not_to_have_text("")
    assert "[" not in left.locator(".turn.assistant").inner_text()  # no failure line
    expect(right.locator(".turn.assistant")).to_have_text(server.script.exchanges[-1]["text"])
    assert server.script.requests_sent[-1]["stream"] is True

    page.fill("#prompt", "and another one")
    page.click("#send")
    expect(right.locator(".turn.assistant")).to_have_count(2)
    expect(right.locator(".turn.assistant").nth(1)).to_have_attribute("data-streaming", "false")
    sent = server.script.requests_sent[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"] and sent[0]["content"] == question
