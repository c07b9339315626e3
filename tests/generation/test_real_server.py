"""LabWeb against a model server nobody on this project wrote: `transformers serve` (the transformers[serving]
extra), serving the tiny Mistral built here, offline. It takes half a minute to start, so it starts once; its
going away and coming back mid-run is a port forwarder in front of it closing and opening again, which is
what a client sees of a server stopped and restarted.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from generation.models import GenerationRun, WorkItem
from generation.selectors import run_progress
from generation.services.items import item_process
from generation.services.runs import run_create, run_resume
from generation.services.teachers import teacher_create
from tests.support.port_forward import PortForward
from tests.support.sdg import HAIKU
from tests.support.tiny_model import build_tiny_model

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.django_db(transaction=True)
SENTENCES = ["write a haiku about the moon and the sea", "the question is clear score one", "answer yes or no"]
POSTS = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" (\d+)')


class Served:
    def __init__(self, model: str, port: int, log: Path):
        self.model, self.port, self.log = model, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def posts(self) -> list[int]:
        """The status of every chat-completions request the server answered, from its own access log."""
        return [int(status) for status in POSTS.findall(self.log.read_text(encoding="utf-8", errors="replace"))]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served-mistral")
    model = build_tiny_model(folder / "model", SENTENCES)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = folder / "serve.log"
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "info"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield Served(model, port, log)
    finally:
        process.terminate()
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            process.kill()  # uvicorn waits out its keep-alive connections; nothing here needs that
            process.wait()


@pytest.fixture
def forward(served):
    forward = PortForward(served.port).start()
    yield forward
    forward.stop()


def _teacher(curator, url: str, model: str, name: str):
    return teacher_create(
        user=curator, name=name, base_url=url, model=model, max_tokens=12, timeout_seconds=30, max_concurrency=2
    )


def test_a_run_on_transformers_serve_survives_the_server_going_away_and_its_counters_match_the_servers(
    queued, fast_retries, settings, curator, demo, served, forward
):
    before = len(served.posts())
    teacher = _teacher(curator, forward.url, served.model, "transformers serve")
    # The server takes `response_format` and answers free text: the probe finds it ignores a JSON schema.
    assert teacher.probed_format == "text" and "ignored the JSON schema" in teacher.probe_note
    probed = len(served.posts()) - before
    run = run_create(
        teacher=teacher,
        user=curator,
        scope="selected",
        leaf_ids=[demo[HAIKU].pk],
        samples_per_leaf=3,
        config={"max_rounds": 1},
    )
    first, second, third = run.items.order_by("pk")
    assert item_process(item_id=first.pk) == "done"
    forward.stop()  # the server goes away mid-run
    assert item_process(item_id=second.pk) == "paused"
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.PAUSED
    assert run.error.startswith(f"Paused: Cannot reach the teacher at {forward.url}")
    forward.start()  # and comes back

    run_resume(run=run, user=curator)
    for item in (second, third):
        assert item_process(item_id=item.pk) == "done"
    run.refresh_from_db()
    assert set(run.items.values_list("state", flat=True)) == {WorkItem.State.DONE}
    # A random model writes no "[Question]" block: the run ends, with nothing kept, and says why.
    assert run.status == GenerationRun.Status.FAILED and run.error.startswith("No sample passed the judges")

    statuses = served.posts()[before + probed :]
    progress = run_progress(run)
    assert progress.teacher["calls"] == len(statuses) == 3  # one question call an item: what the server saw
    # The item that found no server tried every attempt, and no server saw one.
    assert progress.error_kinds == {"unreachable": settings.LABWEB_TEACHER_ATTEMPTS}
    assert progress.teacher["errors"] == settings.LABWEB_TEACHER_ATTEMPTS and set(statuses) == {200}
    assert progress.teacher["retries"] == settings.LABWEB_TEACHER_ATTEMPTS - 1  # every attempt after the first


def test_a_wrong_model_name_fails_the_run_with_the_servers_own_reason(queued, fast_retries, curator, demo, served):
    teacher = _teacher(curator, served.url, "no-such-model", "typo")
    assert teacher.probed_format == "" and f"Server is pinned to '{served.model}'" in teacher.probe_note
    run = run_create(teacher=teacher, user=curator, scope="selected", leaf_ids=[demo[HAIKU].pk], samples_per_leaf=1)
    (item,) = run.items.all()
    before = len(served.posts())
    assert item_process(item_id=item.pk) == "failed"
    run.refresh_from_db()
    assert run.error == (
        f"1 work item failed: the teacher refused the requests (The teacher at {served.url} answered HTTP 400: "
        f"Server is pinned to '{served.model}'; requested 'no-such-model')."
    )
    assert served.posts()[before:] == [400]  # a refusal is not asked again
    assert run_progress(run).teacher["calls"] == 1 and run_progress(run).error_kinds == {"refused": 1}


def test_a_teacher_made_on_the_form_for_transformers_serve_shows_what_the_probe_found(client, operator, served):
    client.force_login(operator)
    form = {"name": "serve", "backend": "openai", "base_url": served.url, "model": served.model, "top_p": 1}
    form |= {"temperature": 0.7, "max_tokens": 12, "max_concurrency": 2, "timeout_seconds": 30}
    form |= {"context_tokens": 2048, "answer_format": "auto"}
    before = len(served.posts())
    assert client.post("/generation/teachers/new/", form).status_code == 302
    assert served.posts()[before:] == [200]  # the probe: one short question, answered
    page = client.get("/generation/teachers/").content.decode()
    assert 'data-answer-format="text">text formats<' in page
    assert "The server ignored the JSON schema (it answered " in page
