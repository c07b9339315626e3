"""Structured answers: a server that holds its answers to a JSON schema is asked for one, found out by a probe
when the teacher is created; one that does not is asked in the text formats, and either way answers read alike."""

import json

import pytest

from generation.sdg import parsing
from generation.sdg.chunking import chunk_document
from generation.sdg.pipelines import (
    CONTEXTS,
    FAITHFUL,
    QUESTION_ANSWERS,
    QUESTION_OK,
    QUESTIONS,
    RESPONSE_RATING,
    Unit,
)
from generation.sdg.teachers import probe_answer_format
from tests.generation.test_sdg_core import run_unit
from tests.support.sdg import HAIKU, MEETINGS, MOONS, MOONS_DOCUMENT, closed_port_url, demo_leaf


@pytest.mark.parametrize(
    ("shape", "answer", "text"),
    [
        (QUESTION_OK.shape, {"reasons": "Clear.", "score": 1}, "Clear.\nScore: 1"),
        (RESPONSE_RATING.shape, {"reasons": "Thin.", "score": 2}, "Thin.\nScore: 2"),
        (FAITHFUL.shape, {"reasons": "All there.", "answer": "YES"}, "All there.\nAnswer: YES"),
        (QUESTIONS, {"questions": ["One?", " Two? "]}, "[Question]\nOne?\n[End]\n[Question]\nTwo?\n[End]"),
        (CONTEXTS, {"contexts": ["Notes."]}, "[Context]\nNotes.\n[End]"),
        (
            QUESTION_ANSWERS,
            {"questions": [{"question": "Q?", "answer": "A."}]},
            "[Question]\nQ?\n[Answer]\nA.\n[End]",
        ),
    ],
)
def test_a_structured_answer_is_written_back_in_the_text_format_its_prompt_asks_for(shape, answer, text):
    schema = shape.schema()
    assert schema["type"] == "object" and set(schema["required"]) == set(answer)
    assert shape.render(json.dumps(answer)) == text


def test_a_structured_answer_that_does_not_fit_its_schema_is_read_as_text():
    shape = QUESTION_OK.shape
    assert shape.render('{"reasons": "Clear.", "score": 7}') is None  # not one of the choices
    assert shape.render('{"reasons": "cut off') is None
    assert shape.render("Clear.\nScore: 1") is None
    assert QUESTIONS.render('{"questions": ["", 3, "Fine?"]}') == "[Question]\nFine?\n[End]"  # empty parts dropped
    assert parsing.score("Clear.\nScore: 1", stage="x", allowed=range(0, 2)) == 1


@pytest.fixture
def schema_teacher(make_teacher):
    return lambda answer_format="json_schema", **options: make_teacher(answer_format=answer_format, **options)


@pytest.mark.parametrize(("answer_format", "follows"), [("json_schema", "json_schema"), ("vllm", "guided")])
def test_a_server_that_follows_a_schema_answers_every_shaped_call_in_json_and_the_units_keep_their_samples(
    schema_teacher, script, answer_format, follows
):
    if follows == "guided":
        script.guided = True
    else:
        script.json_schema = "follow"
    teacher = schema_teacher(answer_format)
    chunk = chunk_document(MOONS_DOCUMENT.read_text(encoding="utf-8"), max_tokens=300)[0]
    for unit in (
        Unit(leaf=demo_leaf(HAIKU), target=4, seed_index=0),
        Unit(leaf=demo_leaf(MEETINGS), target=3, seed_index=0),
        Unit(leaf=demo_leaf(MOONS), target=3, chunk_index=0, chunk=chunk),
    ):
        result, samples = run_unit(unit, teacher)
        assert result.kept == len(samples) == unit.target, result.counts
        assert not any(key.endswith(".malformed") for key in result.counts)
        for sample in samples:
            assert all(text and not text.startswith("{") for text in sample.rationales.values())
    answered_in_json = [e for e in script.exchanges if e["text"].startswith("{")]
    assert answered_in_json
    key = "guided_json" if follows == "guided" else "response_format"
    with_schema = [body for body in script.requests_sent if key in body]
    assert len(with_schema) == len(answered_in_json)
    # The free answer (skills_response) has no shape: it is asked as text.
    assert len(with_schema) < len(script.requests_sent)


def test_a_server_that_ignores_the_schema_is_read_in_the_text_formats(schema_teacher, script):
    script.json_schema = "ignore"
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=4, seed_index=0), schema_teacher())
    assert result.kept == len(samples) == 4
    assert all("response_format" in body for body in script.requests_sent if "Is this instruction" in str(body))


def test_a_text_teacher_sends_no_schema(make_teacher, script):
    script.json_schema = "follow"
    result, _ = run_unit(Unit(leaf=demo_leaf(HAIKU), target=3, seed_index=0), make_teacher())
    assert result.kept == 3
    assert not any("response_format" in body or "guided_json" in body for body in script.requests_sent)


@pytest.mark.parametrize(
    ("mode", "found", "note"),
    [
        ("follow", "json_schema", "held its answer to a JSON schema"),
        ("ignore", "text", "ignored the JSON schema"),
        ("refuse", "text", "refused a JSON schema (response_format json_schema is not supported by this server)"),
    ],
)
def test_the_probe_finds_out_whether_the_server_holds_answers_to_a_schema(teacher_server, script, mode, found, note):
    script.json_schema = mode
    probe = probe_answer_format(base_url=teacher_server.url, model="m", timeout=5)
    assert probe.format == found and note in probe.note


def test_the_probe_of_an_unreachable_or_refusing_server_cannot_tell_and_says_why(teacher_server, script):
    url = closed_port_url()
    unreachable = probe_answer_format(base_url=url, model="m", timeout=2)
    assert unreachable.format == "" and "Cannot reach the server" in unreachable.note
    script.pinned_model = "served"
    refused = probe_answer_format(base_url=teacher_server.url, model="typo", timeout=2)
    assert refused.format == "" and "Server is pinned to 'served'; requested 'typo'." in refused.note


@pytest.mark.django_db(transaction=True)
def test_a_probed_teacher_asks_its_runs_for_json_and_a_setting_overrides_the_probe(
    eager, fast_retries, curator, demo, teacher_server, script
):
    from generation.services.runs import run_create
    from generation.services.teachers import teacher_create, teacher_update

    script.json_schema = "follow"
    teacher = teacher_create(user=curator, name="Schema", base_url=teacher_server.url, model="m-schema")
    assert (teacher.answer_format, teacher.probed_format, teacher.effective_answer_format) == (
        "auto",
        "json_schema",
        "json_schema",
    )
    assert script.requests == 1
    run = run_create(teacher=teacher, user=curator, scope="selected", leaf_ids=[demo[HAIKU].pk], samples_per_leaf=2)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.teacher_config["answer_format"] == "json_schema"
    assert any("response_format" in body for body in script.requests_sent[1:])

    teacher = teacher_update(teacher=teacher, user=curator, answer_format="text")
    assert teacher.effective_answer_format == "text" and teacher.probed_format == ""
    sent = len(script.requests_sent)
    run = run_create(teacher=teacher, user=curator, scope="selected", leaf_ids=[demo[HAIKU].pk], samples_per_leaf=2)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.teacher_config["answer_format"] == "text"
    assert not any("response_format" in body for body in script.requests_sent[sent:])
