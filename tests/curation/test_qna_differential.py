"""Differential test: mutate real corpus files and require LabWeb's verdict to equal the official parser's.

Each mutation is something a contributor's editor, a merge or a hand edit does to a qna.yaml: line endings,
encodings, comments (yamllint directives among them), YAML features, whitespace, key order, deletions. The
official verdict is `TaxonomyParser(schema_version=0)` with yamllint, as `ilab taxonomy diff` runs it. The
mutants are drawn with a fixed seed (LABWEB_DIFFERENTIAL_SEED), so a failure names a mutant that reproduces.
"""

import contextlib
import io
import logging
import os
import random
import re
import sys
from pathlib import Path

import pytest
from instructlab.schema.taxonomy import TaxonomyParser, TaxonomyReadingException

from curation.taxonomy import read_qna

# A larger batch by hand: LABWEB_DIFFERENTIAL_MUTANTS=2000 LABWEB_DIFFERENTIAL_SEED=7 pytest this file.
MUTANTS = int(os.environ.get("LABWEB_DIFFERENTIAL_MUTANTS", "200"))
SEED = int(os.environ.get("LABWEB_DIFFERENTIAL_SEED", "12"))
TOP_KEY = re.compile(r"^[A-Za-z_]+:", re.M)


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _pick_line(text: str, rng: random.Random) -> int:
    return rng.randrange(max(1, len(_lines(text)) - 1))


def _at_line(text: str, rng: random.Random, change) -> str:
    lines = _lines(text)
    index = _pick_line(text, rng)
    lines[index] = change(lines[index])
    return "\n".join(lines)


def _insert_line(text: str, rng: random.Random, new: str) -> str:
    lines = _lines(text)
    lines.insert(_pick_line(text, rng), new)
    return "\n".join(lines)


def _top_blocks(text: str) -> list[str]:
    starts = [m.start() for m in TOP_KEY.finditer(text)]
    if not starts:
        return [text]
    return [text[: starts[0]]] + [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)], strict=True)]


def _shuffle_keys(text: str, rng: random.Random) -> str:
    head, *blocks = _top_blocks(text)
    blocks = [b if b.endswith("\n") else b + "\n" for b in blocks]
    rng.shuffle(blocks)
    return head + "".join(blocks)


def _drop_key(text: str, rng: random.Random) -> str:
    head, *blocks = _top_blocks(text)
    if blocks:
        del blocks[rng.randrange(len(blocks))]
    return head + "".join(blocks)


def _duplicate_key(text: str, rng: random.Random) -> str:
    head, *blocks = _top_blocks(text)
    if blocks:
        block = rng.choice(blocks)
        blocks.append(block if block.endswith("\n") else "\n" + block)
    return head + "".join(blocks)


def _anchor_alias(text: str, rng: random.Random) -> str:
    match = re.search(r"^(created_by|task_description|domain):( *)(\S.*)$", text, re.M)
    if not match or match.group(3).startswith(("|", ">", "&", "*", "'", '"')):
        return text + "extra_anchor: &x 1\n"
    key = match.group(1)
    anchored = text[: match.start()] + f"{key}: &v {match.group(3)}" + text[match.end() :]
    return anchored + ("dup_alias: *v\n" if rng.random() < 0.5 else "")


MUTATIONS = {
    "crlf": lambda t, r: t.replace("\n", "\r\n"),
    "cr": lambda t, r: t.replace("\n", "\r"),
    "crlf-one-line": lambda t, r: _at_line(t, r, lambda line: line + "\r"),
    "bom": lambda t, r: "\ufeff" + t,
    "latin-1": lambda t, r: t.encode("utf-8").decode("utf-8").encode("latin-1", "replace").decode("latin-1") + "é\n",
    "utf-16": lambda t, r: t,  # encoded below
    "comment": lambda t, r: _insert_line(t, r, "# a note from a reviewer"),
    "comment-after-value": lambda t, r: _at_line(t, r, lambda line: line + "  # why" if line.strip() else line),
    "yamllint-disable-file": lambda t, r: "# yamllint disable-file\n" + t,
    "yamllint-disable": lambda t, r: "# yamllint disable\n" + t,
    "yamllint-disable-rule": lambda t, r: "# yamllint disable rule:trailing-spaces\n" + t,
    "yamllint-disable-line": lambda t, r: _at_line(t, r, lambda line: line + "   # yamllint disable-line"),
    "trailing-space": lambda t, r: _at_line(t, r, lambda line: line + " "),
    "trailing-tab": lambda t, r: _at_line(t, r, lambda line: line + "\t"),
    "trailing-formfeed": lambda t, r: _at_line(t, r, lambda line: line + "\x0c"),
    "no-final-newline": lambda t, r: t.rstrip("\n"),
    "extra-final-newlines": lambda t, r: t + "\n\n",
    "blank-lines": lambda t, r: _insert_line(t, r, ""),
    "tab-indent": lambda t, r: _at_line(t, r, lambda line: re.sub(r"^ {2}", "\t", line)),
    "dedent": lambda t, r: _at_line(t, r, lambda line: line[1:] if line.startswith(" ") else line),
    "indent": lambda t, r: _at_line(t, r, lambda line: " " + line),
    "delete-line": lambda t, r: "\n".join(x for i, x in enumerate(_lines(t)) if i != _pick_line(t, r)),
    "delete-key": _drop_key,
    "duplicate-key": _duplicate_key,
    "shuffle-keys": _shuffle_keys,
    "anchor-alias": _anchor_alias,
    "document-markers": lambda t, r: "---\n" + t + "...\n",
    "two-documents": lambda t, r: t + "---\nversion: 3\n",
    "quote-open": lambda t, r: _at_line(t, r, lambda line: line.replace(": ", ': "', 1)),
    "flow-empty": lambda t, r: t + "seed_examples: []\n",
    "version-string": lambda t, r: re.sub(r"^version: *(\d+)", r"version: '\1'", t, flags=re.M),
    "version-float": lambda t, r: re.sub(r"^version: *(\d+)", r"version: \1.0", t, flags=re.M),
    "version-infinite": lambda t, r: re.sub(r"^version: *(\d+)", "version: .inf", t, flags=re.M),
    "version-boolean": lambda t, r: re.sub(r"^version: *(\d+)", "version: true", t, flags=re.M),
    "truncate": lambda t, r: t[: r.randrange(len(t) + 1)],
    "nel-line-break": lambda t, r: t.replace("\n", "\x85", 1 + r.randrange(3)),
    "line-separator": lambda t, r: _at_line(t, r, lambda line: line + "\u2028"),
    "control-character": lambda t, r: _at_line(t, r, lambda line: line + "\x01"),
    "del-character": lambda t, r: _at_line(t, r, lambda line: line + "\x7f"),
    "astral-character": lambda t, r: _at_line(t, r, lambda line: line + " \U0001f600" if ": " in line else line),
    "quoted-duplicate-key": lambda t, r: t + '"version": 3\n',
    "merge-key": lambda t, r: t + "base: &b {a: 1}\nmerged:\n  <<: *b\n  <<: *b\n",
    "recursive-alias": lambda t, r: t + "loop: &loop [1, *loop]\n",
}


def _mutants(corpus: Path) -> list[tuple[str, str, bytes]]:
    rng = random.Random(SEED)
    files = sorted(corpus.rglob("qna.yaml"))
    names = sorted(MUTATIONS)
    out = []
    for number in range(MUTANTS):
        name = names[number % len(names)]
        source = rng.choice(files)
        text = source.read_text(encoding="utf-8")
        mutated = MUTATIONS[name](text, rng)
        if name == "latin-1":
            raw = mutated.encode("latin-1", "replace")
        elif name == "utf-16":
            raw = mutated.encode("utf-16")
        else:
            raw = mutated.encode("utf-8")
        out.append((f"{name}#{number}", str(source.relative_to(corpus)), raw))
    return out


def _official(parser: TaxonomyParser, file: Path) -> tuple[bool, bool]:
    """(accepted, empty): the official parser only warns about an empty file."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            result = parser.parse(file)
        except TaxonomyReadingException:
            return False, False
    return result.errors == 0, result.contents is None and result.errors == 0


@pytest.fixture
def official(monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    parser = TaxonomyParser(schema_version=0, message_format="STANDARD")
    parser.yq_available = False
    logging.disable(logging.WARNING)
    yield parser
    logging.disable(logging.NOTSET)


def test_labweb_and_the_official_parser_agree_on_every_mutant(corpus, official, tmp_path):
    disagreements = []
    kinds_seen = set()
    for label, rel, raw in _mutants(corpus):
        file = tmp_path / label.replace("#", "_") / rel
        file.parent.mkdir(parents=True)
        file.write_bytes(raw)
        accepted, empty = _official(official, file)
        ours = read_qna(raw, rel)
        kinds_seen.add((label.split("#")[0], accepted))
        if empty:
            # Nothing to import: LabWeb refuses what the official parser only warns about.
            if ours.valid or "empty" not in " ".join(p.message for p in ours.errors):
                disagreements.append((label, rel, "official: empty (warning)", [str(p) for p in ours.errors]))
            continue
        if accepted != ours.valid:
            disagreements.append((label, rel, f"official accepts: {accepted}", [str(p) for p in ours.errors][:3]))
    assert disagreements == [], "\n".join(map(str, disagreements))
    # Both verdicts occur, so the comparison cannot pass by both sides accepting (or refusing) everything.
    assert {accepted for _, accepted in kinds_seen} == {True, False}
