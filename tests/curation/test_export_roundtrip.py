"""Lossless round trip: what the import command brings in, the export API and command write back byte for byte,
and an edit made in LabWeb changes only its own lines of the file, so a pull request shows exactly that edit."""

import difflib
import io
import os
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from curation.models import Leaf, TaxonomyImport
from curation.qna_map import leaf_qna
from curation.taxonomy import dump_qna, read_qna

JOKES = "compositional_skills/writing/freeform/jokes"
ALIASES = "compositional_skills/writing/freeform/echoes"
WINDOWS = "compositional_skills/writing/freeform/windows"
VUE = "knowledge/technology/programming/languages/vue"

JOKES_QNA = """\
# Jokes for the model to learn from.
version: 3
task_description: 'Tell jokes.'   # quoted on purpose
created_by: someone
seed_examples:
  - question: "Why did the chicken cross the road?"
    answer: To get to the other side.
  # the classic one
  - question: Knock knock.
    answer: |
      Who's there?
  - question: What is orange and sounds like a parrot?
    answer: A carrot.
  - question: Why are fish so smart?
    answer: They live in schools.
  - question: What do you call a fake noodle?
    answer: An impasta.
"""

# Anchors and aliases: expanded, an export of such a file grows by the aliases' size each time they nest.
ALIASES_QNA = """\
version: 3
task_description: Say it again.
created_by: someone
seed_examples:
  - question: Say hello.
    answer: &hello Hello, hello, hello, hello, hello, hello, hello, hello, hello, hello.
  - question: Say hello again.
    answer: *hello
  - question: And once more.
    answer: *hello
  - question: Say goodbye.
    answer: Goodbye.
  - question: Say nothing.
    answer: '...'
"""


def _windows_qna() -> bytes:
    return ("\ufeff" + JOKES_QNA.replace("Tell jokes.", "Tell jokes on Windows.")).replace("\n", "\r\n").encode()


def _taxonomy(root: Path, corpus: Path) -> Path:
    for folder, content in (
        (JOKES, JOKES_QNA.encode()),
        (ALIASES, ALIASES_QNA.encode()),
        (WINDOWS, _windows_qna()),
        # A schema version written as a float: version 3 to the official parser, and to stay 3.0 in the file.
        (VUE, (corpus / VUE / "qna.yaml").read_bytes().replace(b"version: 3\n", b"version: 3.0\n", 1)),
    ):
        (root / folder).mkdir(parents=True)
        (root / folder / "qna.yaml").write_bytes(content)
    return root


def _export(api) -> dict[str, bytes]:
    response = api.get("/api/export/")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.getvalue())) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _changed_lines(before: bytes, after: bytes) -> list[str]:
    diff = difflib.unified_diff(before.decode().splitlines(), after.decode().splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def _seeds(api, folder: str) -> tuple[dict, list[dict]]:
    leaf = Leaf.objects.get(path=folder)
    seeds = api.get("/api/seeds/", {"leaf": leaf.pk}).json()
    return {"id": leaf.pk, "revision": leaf.revision}, sorted(seeds, key=lambda seed: seed["position"])


def _official_failures(root: Path, monkeypatch) -> list[str]:
    from instructlab.schema.taxonomy import TaxonomyParser

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    parser = TaxonomyParser(schema_version=0, message_format="LOGGING")
    parser.yq_available = False
    return [str(path) for path in sorted(root.rglob("qna.yaml")) if parser.parse(path).errors]


@pytest.mark.django_db
def test_unedited_corpus_exports_every_imported_file_byte_for_byte(corpus, curator, tmp_path):
    call_command("taxonomy_import", str(corpus), "--user", curator.username)
    out = tmp_path / "export"
    call_command("taxonomy_export", str(out))
    exported = sorted(out.rglob("qna.yaml"))
    assert len(exported) == Leaf.objects.count() == 301
    different = [str(p) for p in exported if p.read_bytes() != (corpus / p.relative_to(out)).read_bytes()]
    assert different == []


@pytest.mark.django_db
def test_unedited_leaves_export_as_imported_crlf_bom_float_version_and_aliases(corpus, curator, api, tmp_path):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    assert Leaf.objects.filter(is_valid=True).count() == 4
    files = _export(api)
    for folder in (JOKES, ALIASES, WINDOWS, VUE):
        assert files[f"{folder}/qna.yaml"] == (source / folder / "qna.yaml").read_bytes(), folder
    assert Leaf.objects.get(path=VUE).version == 3


@pytest.mark.django_db
def test_an_edited_seed_changes_only_its_line_and_keeps_comments_and_quoting(corpus, curator, api, tmp_path):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    leaf, seeds = _seeds(api, JOKES)
    response = api.patch(
        f"/api/seeds/{seeds[2]['id']}/", {"answer": "A carrot, again.", "revision": leaf["revision"]}, format="json"
    )
    assert response.status_code == 200, response.content
    exported = _export(api)[f"{JOKES}/qna.yaml"]
    assert _changed_lines(JOKES_QNA.encode(), exported) == ["-    answer: A carrot.", "+    answer: A carrot, again."]
    text = exported.decode()
    assert "# Jokes for the model to learn from.\n" in text and "  # the classic one\n" in text
    assert "task_description: 'Tell jokes.'   # quoted on purpose\n" in text
    assert '  - question: "Why did the chicken cross the road?"\n' in text


@pytest.mark.django_db
def test_a_seed_moved_added_or_deleted_changes_only_its_own_lines(corpus, curator, api, tmp_path):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    leaf, seeds = _seeds(api, JOKES)
    fish = ["  - question: Why are fish so smart?", "    answer: They live in schools."]

    response = api.post(f"/api/seeds/{seeds[3]['id']}/move/", {"position": 0, "revision": leaf["revision"]})
    assert response.status_code == 200, response.content
    moved = _export(api)[f"{JOKES}/qna.yaml"]
    changed = _changed_lines(JOKES_QNA.encode(), moved)
    assert sorted(changed) == sorted(["+" + line for line in fish] + ["-" + line for line in fish])
    assert moved.decode().index("Why are fish") < moved.decode().index("Why did the chicken")
    assert "  # the classic one\n" in moved.decode()

    leaf, seeds = _seeds(api, JOKES)
    response = api.post(
        "/api/seeds/",
        {"leaf": leaf["id"], "question": "What is a new joke?", "answer": "This one.", "revision": leaf["revision"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    added = _export(api)[f"{JOKES}/qna.yaml"]
    assert _changed_lines(moved, added) == ["+  - question: What is a new joke?", "+    answer: This one."]

    leaf, seeds = _seeds(api, JOKES)
    response = api.delete(f"/api/seeds/{seeds[2]['id']}/", {"revision": leaf["revision"]}, format="json")
    assert response.status_code == 204, response.content
    deleted = _export(api)[f"{JOKES}/qna.yaml"]
    # The comment above the deleted seed goes with it.
    assert _changed_lines(added, deleted) == [
        "-  # the classic one",
        "-  - question: Knock knock.",
        "-    answer: |",
        "-      Who's there?",
    ]
    assert read_qna(deleted, f"{JOKES}/qna.yaml").valid


@pytest.mark.django_db
def test_edits_keep_float_version_aliases_line_endings_and_bom(corpus, curator, api, tmp_path, monkeypatch):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    for folder, position, answer in ((ALIASES, 3, "Bye."), (WINDOWS, 2, "A carrot, again."), (VUE, 0, None)):
        leaf, seeds = _seeds(api, folder)
        if answer is None:  # knowledge: the first answer of the seed's questions and answers
            qas = seeds[position]["questions_and_answers"]
            fields = {"questions_and_answers": [{**qas[0], "answer": "Edited in LabWeb."}, *qas[1:]]}
        else:
            fields = {"answer": answer}
        response = api.patch(
            f"/api/seeds/{seeds[position]['id']}/", {**fields, "revision": leaf["revision"]}, format="json"
        )
        assert response.status_code == 200, response.content
    files = _export(api)

    aliases = files[f"{ALIASES}/qna.yaml"]
    assert _changed_lines(ALIASES_QNA.encode(), aliases) == ["-    answer: Goodbye.", "+    answer: Bye."]

    windows = files[f"{WINDOWS}/qna.yaml"]
    original = _windows_qna()
    assert windows.startswith(b"\xef\xbb\xbf") and windows.count(b"\r\n") == original.count(b"\r\n")
    assert _changed_lines(original.replace(b"\r\n", b"\n"), windows.replace(b"\r\n", b"\n")) == [
        "-    answer: A carrot.",
        "+    answer: A carrot, again.",
    ]

    vue = files[f"{VUE}/qna.yaml"]
    vue_before = (source / VUE / "qna.yaml").read_bytes()
    assert b"\nversion: 3.0\n" in vue
    changed = _changed_lines(vue_before, vue)
    assert changed[-1].endswith("answer: Edited in LabWeb.") and all(line.startswith("-") for line in changed[:-1])

    assert _official_failures(_write(tmp_path / "exported", files), monkeypatch) == []


@pytest.mark.django_db
def test_an_edit_of_an_anchored_value_keeps_the_other_places_aliased(corpus, curator, api, tmp_path):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    leaf, seeds = _seeds(api, ALIASES)
    api.patch(f"/api/seeds/{seeds[0]['id']}/", {"answer": "Hi.", "revision": leaf["revision"]}, format="json")
    exported = _export(api)[f"{ALIASES}/qna.yaml"]
    # The anchor moves to the next place that names it; the last one stays an alias.
    hello = "Hello, hello, hello, hello, hello, hello, hello, hello, hello, hello."
    expected = ALIASES_QNA.replace(f"&hello {hello}", "Hi.").replace("*hello", f"&hello {hello}", 1)
    assert exported.decode() == expected and expected.count("*hello") == 1
    again = _write(tmp_path / "again", {f"{ALIASES}/qna.yaml": exported})
    call_command("taxonomy_import", str(again), "--user", curator.username)
    assert Leaf.objects.get(path=ALIASES).revision == leaf["revision"] + 1  # the same data: nothing changed


@pytest.mark.django_db
def test_a_reimport_that_changes_only_comments_is_what_the_next_export_writes(corpus, curator, api, tmp_path):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    commented = JOKES_QNA.replace("# the classic one", "# the oldest one").encode()
    (source / JOKES / "qna.yaml").write_bytes(commented)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    assert TaxonomyImport.objects.first().unchanged == 4
    assert Leaf.objects.get(path=JOKES).revision == 1
    assert _export(api)[f"{JOKES}/qna.yaml"] == commented


@pytest.mark.django_db
def test_export_import_export_gives_the_same_bytes(corpus, curator, api, tmp_path):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    leaf, seeds = _seeds(api, JOKES)
    api.patch(f"/api/seeds/{seeds[0]['id']}/", {"answer": "Chickens.", "revision": leaf["revision"]}, format="json")
    first = tmp_path / "first.tar.gz"
    call_command("taxonomy_export", str(first))
    call_command("taxonomy_import", str(first), "--user", curator.username)
    again = tmp_path / "again"
    call_command("taxonomy_export", str(again))
    with tarfile.open(first) as tar:
        exported = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert exported == {str(p.relative_to(again)): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert b"answer: Chickens." in exported[f"{JOKES}/qna.yaml"]


@pytest.mark.django_db
def test_a_leaf_made_in_labweb_exports_as_labweb_writes_it(api, tmp_path, monkeypatch):
    response = api.post("/api/leaves/", {"path": JOKES, "task_description": "Tell jokes."}, format="json")
    assert response.status_code == 201, response.content
    leaf = Leaf.objects.get(path=JOKES)
    for index in range(5):
        api.post(
            "/api/seeds/",
            {"leaf": leaf.pk, "question": f"Joke {index}?", "answer": "Yes", "revision": leaf.revision + index},
            format="json",
        )
    leaf.refresh_from_db()
    assert leaf.is_valid and leaf.imported_qna is None
    exported = _export(api)[f"{JOKES}/qna.yaml"]
    assert exported.decode() == dump_qna(leaf_qna(leaf))
    assert yaml.safe_load(exported)["seed_examples"][0]["answer"] == "Yes"
    (tmp_path / JOKES).mkdir(parents=True)
    (tmp_path / JOKES / "qna.yaml").write_bytes(exported)
    assert _official_failures(tmp_path, monkeypatch) == []


@pytest.mark.django_db
def test_an_edit_then_its_revert_leaves_diff_and_export_as_imported(corpus, curator, api, tmp_path):
    source = _taxonomy(tmp_path / "taxonomy", corpus)
    call_command("taxonomy_import", str(source), "--user", curator.username)
    assert api.get("/api/diff/").json()["modified"] == []
    for folder in (JOKES, ALIASES, WINDOWS, VUE):
        leaf, seeds = _seeds(api, folder)
        seed = seeds[0]
        field = "questions_and_answers" if seed["questions_and_answers"] else "answer"
        original = seed[field]
        edited = [{**original[0], "answer": "Edited."}, *original[1:]] if field != "answer" else "Edited."
        for revision, value in ((leaf["revision"], edited), (leaf["revision"] + 1, original)):
            response = api.patch(f"/api/seeds/{seed['id']}/", {field: value, "revision": revision}, format="json")
            assert response.status_code == 200, response.content
        created_by = Leaf.objects.get(path=folder).created_by
        for revision, value in ((leaf["revision"] + 2, "someone else"), (leaf["revision"] + 3, created_by)):
            response = api.patch(
                f"/api/leaves/{leaf['id']}/", {"created_by": value, "revision": revision}, format="json"
            )
            assert response.status_code == 200, response.content
        assert Leaf.objects.get(path=folder).revision == leaf["revision"] + 4
    diff = api.get("/api/diff/").json()
    assert (diff["modified"], diff["unchanged"]) == ([], 4)
    files = _export(api)
    for folder in (JOKES, ALIASES, WINDOWS, VUE):
        assert files[f"{folder}/qna.yaml"] == (source / folder / "qna.yaml").read_bytes(), folder
