"""What a run says when its teacher fails: the server's own reason, the cause in the headline, and a resume
that can take the teacher as it is now."""

import asyncio

import pytest

from generation.models import GenerationRun, Sample, WorkItem
from generation.sdg.teachers import OpenAITeacher, RetryPolicy, Sampling, TeacherError, probe_answer_format
from generation.services.runs import run_create, run_resume
from generation.services.teachers import teacher_create, teacher_update
from tests.support.sdg import HAIKU, closed_port_url

HELLO = [{"role": "user", "content": "Say hello."}]
ONE_TRY = RetryPolicy(attempts=1)


NGINX_PAGE = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request "
    "Entity Too Large</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"
)
TITLE_ONLY_PAGE = "<!DOCTYPE html><html><head><title>Bad request &amp; nothing else</title></head><body></body></html>"


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        ({"error": {"message": "model 'x' not found", "type": "invalid_request_error"}}, "", "model 'x' not found"),
        ({"detail": "Server is pinned to 'a'; requested 'b'."}, "", "Server is pinned to 'a'; requested 'b'."),
        (
            {"detail": [{"loc": ["body", "max_tokens"], "msg": "Input should be a valid integer", "type": "int"}]},
            "",
            "body.max_tokens: Input should be a valid integer",
        ),
        ({"error": "Bad request: missing messages"}, "", "Bad request: missing messages"),
        ("model runner crashed: out of memory", "", "model runner crashed: out of memory"),
        (NGINX_PAGE, "text/html", "413 Request Entity Too Large nginx/1.24.0"),
        (TITLE_ONLY_PAGE, "text/html; charset=utf-8", "Bad request & nothing else"),
        ("", "", "no reason given (the answer's body was empty)"),
    ],
    ids=["openai", "fastapi-detail", "fastapi-validation", "error-string", "plain-text", "html", "html-title", "empty"],
)
def test_a_refused_request_shows_the_servers_own_reason_whatever_its_body(
    teacher_server, script, body, content_type, reason
):
    script.bad_request_every, script.error_body, script.error_content_type = 1, body, content_type
    client = OpenAITeacher(base_url=teacher_server.url, model="m-errors", retry=ONE_TRY)
    with pytest.raises(TeacherError) as caught:
        asyncio.run(client.complete(HELLO, Sampling()))
    assert caught.value.message == f"The teacher at {teacher_server.url} answered HTTP 400: {reason}"
    assert caught.value.kind == "refused" and "Error code" not in caught.value.message
    # The probe made when the teacher is saved quotes the server alike.
    probe = probe_answer_format(base_url=teacher_server.url, model="m-errors", timeout=5)
    assert probe.format == "" and probe.note == f"The server refused the probe: HTTP 400: {reason.rstrip('.')}."


def _run_on_a_typo(teacher_server, curator, demo):
    """A teacher naming a model its server does not serve (it answers 400), and the run that failed on it."""
    teacher_server.script.pinned_model = "the-served-model"
    teacher = teacher_create(user=curator, name="Pinned", base_url=teacher_server.url, model="a-typo")
    return teacher, _run(teacher, curator, demo)


def _run(teacher, curator, demo, samples_per_leaf=3) -> GenerationRun:
    run = run_create(
        teacher=teacher, user=curator, scope="selected", leaf_ids=[demo[HAIKU].pk], samples_per_leaf=samples_per_leaf
    )
    run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_teacher_is_unreachable_says_so_in_its_headline_and_pauses(eager, fast_retries, curator, demo):
    url = closed_port_url()
    teacher = teacher_create(user=curator, name="Gone", base_url=url, model="m", timeout_seconds=2)
    run = _run(teacher, curator, demo)
    # An unreachable teacher pauses the run (resume it once the server is back), saying why.
    assert run.status == GenerationRun.Status.PAUSED
    assert run.error.startswith("Paused: Cannot reach the teacher at ")
    assert url in run.error and "passed the judges" not in run.error


@pytest.mark.django_db(transaction=True)
def test_a_teacher_whose_model_list_answers_an_error_page_pauses_the_run_quoting_the_page(
    eager, fast_retries, curator, demo, teacher_server, script
):
    teacher = teacher_create(user=curator, name="Behind a proxy", base_url=teacher_server.url, model="m")
    page = "<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service "
    page += "Temporarily Unavailable</h1></center><hr><center>nginx</center></body></html>"
    script.models_error = (503, page)
    run = _run(teacher, curator, demo)
    assert run.status == GenerationRun.Status.PAUSED
    assert run.error == (
        f"Paused: The teacher at {teacher_server.url} answered HTTP 503: 503 Service Temporarily Unavailable nginx"
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_done_with_failed_items_names_their_cause_in_its_headline(
    eager, fast_retries, settings, teacher, curator, demo, script
):
    from tests.support.sdg import MEETINGS

    settings.LABWEB_ITEM_RETRIES = 0
    script.fail_matching = demo[HAIKU].task_description  # every prompt about the haiku leaf answers HTTP 500
    run = run_create(
        teacher=teacher,
        user=curator,
        scope="selected",
        leaf_ids=[demo[HAIKU].pk, demo[MEETINGS].pk],
        samples_per_leaf=3,
    )
    run.refresh_from_db()
    failed = run.items.filter(state=WorkItem.State.FAILED).count()
    assert run.status == GenerationRun.Status.PARTIAL and failed == run.items.filter(leaf_path=HAIKU).count() > 1
    assert run.error == (
        f"Done with {failed} failed work items (the teacher's server kept failing: The teacher at "
        f"{teacher.base_url} answered HTTP 500: scripted internal error). See the list of failed items; "
        '"Retry failed items" tries them again.'
    )


@pytest.mark.django_db(transaction=True)
def test_resume_keeps_the_runs_teacher_until_asked_to_take_the_teacher_as_it_is_now(
    eager, fast_retries, client, curator, demo, teacher_server, script
):
    from django.contrib.auth.models import Group

    teacher, run = _run_on_a_typo(teacher_server, curator, demo)
    assert run.status == GenerationRun.Status.FAILED
    assert run.error == (
        f"3 work items failed: the teacher refused the requests (The teacher at {teacher_server.url} answered "
        "HTTP 400: Server is pinned to 'the-served-model'; requested 'a-typo')."
    )
    curator.groups.add(Group.objects.get_or_create(name="operator")[0])
    client.force_login(curator)
    page = client.get(f"/generation/runs/{run.pk}/").content.decode()
    assert "keeps the teacher settings it started with" in page and 'id="resume-run-current-teacher"' not in page
    assert f'href="/generation/teachers/{teacher.pk}/" id="run-teacher-edit"' in page

    teacher_update(teacher=teacher, user=curator, model="the-served-model")
    page = client.get(f"/generation/runs/{run.pk}/").content.decode()
    assert "model: a-typo → the-served-model" in page and 'id="resume-run-current-teacher"' in page

    run_resume(run=run, user=curator)  # a plain resume asks the teacher the run recorded: refused again
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FAILED and "requested 'a-typo'" in run.error

    response = client.post(f"/generation/runs/{run.pk}/resume/", {"teacher": "current"})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert run.teacher_config["model"] == "the-served-model"
    assert [earlier["model"] for earlier in run.teacher_config["earlier"]] == ["a-typo"]
    assert set(Sample.objects.filter(run=run).values_list("teacher_model", flat=True)) == {"the-served-model"}
    assert set(run.items.values_list("state", flat=True)) == {WorkItem.State.DONE}
    assert run.events.filter(message__contains="uses the teacher as it is now (model 'a-typo' → ").exists()


@pytest.mark.django_db(transaction=True)
def test_the_api_says_what_changed_on_the_teacher_and_resumes_with_it_when_asked(
    eager, fast_retries, curator, operator, demo, teacher_server, script
):
    from rest_framework.test import APIClient

    teacher, run = _run_on_a_typo(teacher_server, curator, demo)
    api = APIClient()
    api.force_authenticate(operator)
    assert api.get(f"/api/runs/{run.pk}/").json()["teacher_changes"] == {}
    teacher_update(teacher=teacher, user=curator, model="the-served-model")
    detail = api.get(f"/api/runs/{run.pk}/").json()
    assert detail["teacher_changes"] == {"model": ["a-typo", "the-served-model"]}
    assert detail["teacher_config"]["model"] == "a-typo"

    assert api.post(f"/api/runs/{run.pk}/resume/", {}, format="json").status_code == 200  # its own teacher again
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FAILED and "requested 'a-typo'" in run.error

    response = api.post(f"/api/runs/{run.pk}/resume/", {"with_current_teacher": True}, format="json")
    assert response.status_code == 200 and response.json()["teacher_config"]["model"] == "the-served-model"
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert api.get(f"/api/runs/{run.pk}/").json()["teacher_changes"] == {}


@pytest.mark.django_db(transaction=True)
def test_a_runs_teacher_counters_add_up_to_what_the_server_saw_over_every_attempt(
    eager, teacher, curator, demo, script
):
    from generation.selectors import run_progress
    from tests.support.sdg import MOONS

    script.fail_every, script.rate_limit_every, script.broken_json_every, script.bad_request_every = 5, 7, 11, 17
    run = run_create(
        teacher=teacher, user=curator, scope="selected", leaf_ids=[demo[HAIKU].pk, demo[MOONS].pk], samples_per_leaf=4
    )
    broken = sum(1 for e in script.exchanges if e["status"] == 200 and e["number"] % 11 == 0)
    failed_calls = script.statuses[500] + script.statuses[429] + script.statuses[400] + broken

    def check():
        progress = run_progress(run)
        assert progress.teacher["calls"] == script.requests
        assert progress.teacher["errors"] == failed_calls
        assert dict(progress.error_kinds) == {
            kind: n
            for kind, n in {
                "server": script.statuses[500] + script.statuses[429],
                "refused": script.statuses[400],
                "bad_answer": broken,
            }.items()
            if n
        }
        # A refused request (4xx) is not asked again; every other failed call was, unless it was its last try.
        assert progress.teacher["retries"] <= failed_calls - script.statuses[400]
        return progress

    progress = check()
    assert script.statuses[400] >= 1 and progress.states["failed"] >= 1
    # LabWeb never relies on `n`: no request asks for more than one answer (several servers ignore it).
    assert script.requests_sent and not any("n" in body for body in script.requests_sent)
    assert progress.teacher["errors"] >= progress.states["failed"]

    script.bad_request_every = 0
    run_resume(run=run, user=curator)  # the items that failed go again; their counters go on from the first try
    broken = sum(1 for e in script.exchanges if e["status"] == 200 and e["number"] % 11 == 0)
    failed_calls = script.statuses[500] + script.statuses[429] + script.statuses[400] + broken
    check()
    assert run.items.filter(attempts__gte=2).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ignores_sampling", [True, False])
def test_a_teacher_that_ignores_sampling_is_noticed_and_named_on_the_run_and_teacher_pages(
    eager, teacher, curator, demo, script, client, ignores_sampling
):
    from django.contrib.auth.models import Group

    from generation.selectors import run_progress

    script.same_answer = ignores_sampling
    # Two questions a call and three samples an item: every item asks its question prompt again, with a new seed.
    run = run_create(
        teacher=teacher,
        user=curator,
        scope="selected",
        leaf_ids=[demo[HAIKU].pk],
        samples_per_leaf=18,
        config={"questions_per_call": 2},
    )
    same = run_progress(run).teacher["same_answers"]
    teacher.refresh_from_db()
    curator.groups.add(Group.objects.get(name="operator"))
    client.force_login(curator)
    run_page = client.get(f"/generation/runs/{run.pk}/").content.decode()
    teachers_page = client.get("/generation/teachers/").content.decode()
    if ignores_sampling:
        assert same >= run.items.count()  # each item's second round at least
        assert "most likely ignores the sampling parameters" in teacher.sampling_note
        assert "do_sample" in teacher.sampling_note
        assert 'id="ignored-sampling"' in run_page and "ignores the sampling parameters" in run_page
        assert 'data-ignored-sampling="true"' in teachers_page
    else:
        assert same == 0 and teacher.sampling_note == ""
        assert 'id="ignored-sampling"' not in run_page and 'data-ignored-sampling="true"' not in teachers_page
