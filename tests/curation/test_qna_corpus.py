"""The validator against the 426 real contributed qna.yaml files, and against instructlab-schema itself."""

import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from instructlab.schema.taxonomy import TaxonomyParser, TaxonomyReadingException

from curation.taxonomy import dump_qna, read_qna

EXPECTED = Path(__file__).with_name("corpus_rejections.json")


def _corpus_files(corpus: Path) -> list[tuple[str, bytes]]:
    return [(str(p.relative_to(corpus)), p.read_bytes()) for p in sorted(corpus.rglob("qna.yaml"))]


@pytest.fixture(scope="module")
def parsed(corpus):
    return {path: read_qna(raw, path) for path, raw in _corpus_files(corpus)}


def test_corpus_has_426_files_302_valid(parsed):
    assert len(parsed) == 426
    assert sum(q.valid for q in parsed.values()) == 302


def test_every_rejection_names_line_field_and_reason(parsed):
    """Pinned: which files are rejected and the first reason, so a change in the rules shows up here."""
    rejected = {path: q.errors for path, q in parsed.items() if not q.valid}
    summary = {path: f"{e[0].line}:{e[0].field or '-'}: {e[0].message}" for path, e in rejected.items()}
    assert summary == json.loads(EXPECTED.read_text())
    for errors in rejected.values():
        assert all(e.line and e.line >= 1 for e in errors)


def test_reasons_cover_the_corpus_mess(parsed):
    messages = " | ".join(p.message for q in parsed.values() for p in q.errors)
    for reason in (
        "Not valid YAML",
        "not a mapping",
        "Version 1 is not supported for knowledge",
        "Trailing spaces",
        '"attribution" is not allowed here',
        "Must not be empty",
        "Must be of type string",
        '"task_description" is required',
    ):
        assert reason in messages


def test_agrees_with_instructlab_schema_on_every_file(parsed, corpus, monkeypatch):
    """The official parser (with yamllint, as `ilab taxonomy diff` runs it) accepts exactly the files we accept."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    parser = TaxonomyParser(schema_version=0, message_format="STANDARD")
    parser.yq_available = False  # yq only adds line numbers to the official messages
    logging.disable(logging.WARNING)
    disagreements = []
    try:
        for path, ours in parsed.items():
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    official_ok = parser.parse(corpus / path).errors == 0
                except TaxonomyReadingException:
                    official_ok = False
            if official_ok != ours.valid:
                disagreements.append((path, official_ok, [str(p) for p in ours.errors]))
    finally:
        logging.disable(logging.NOTSET)
    assert disagreements == []


def test_every_valid_file_round_trips_through_our_writer(parsed):
    for path, qna in parsed.items():
        if qna.valid:
            again = read_qna(dump_qna(qna.data), path)
            assert again.valid, (path, [str(p) for p in again.problems])
            assert again.data == qna.data, path
