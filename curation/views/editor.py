"""What the leaf editor shows: each input, its value, and the validation messages that name it.

A validation problem names a field of the qna data ("task_description", "seed_examples[2].question",
"document.patterns[0]"); each input has a slot (an element with a stable id) where the problems about its
field go, so a response can refresh any slot out of band.
"""

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from curation.models import Kind, Leaf, SeedExample
from curation.qna_map import EDITABLE_LEAF_FIELDS, leaf_qna, stored_value
from curation.taxonomy import validate_qna

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]+")
_LAST_PART = re.compile(r"(\.[^.\[\]]+|\[\d+\])$")
_DOCUMENT_KEY = re.compile(r"^document\.([A-Za-z_]+)")

# field: (label, multiline), in the order the page shows them; which of them a leaf shows depends on its kind
# and what it holds. The version is not typed in: it is shown in the leaf's status.
LEAF_INPUTS = {
    "created_by": ("Created by (GitHub user name)", False),
    "task_description": ("Task description", True),
    "domain": ("Domain", False),
    "document_outline": ("Document outline", True),
    "document_repo": ("Document repository (URL)", False),
    "document_commit": ("Document commit", False),
    "document_patterns": ("Document patterns (one per line)", True),
    "attribution": ("Attribution (attribution.txt)", True),
}
assert set(LEAF_INPUTS) == set(EDITABLE_LEAF_FIELDS) - {"version"}
KIND_INPUTS = {
    Kind.KNOWLEDGE: {
        "created_by",
        "domain",
        "document_outline",
        "document_repo",
        "document_commit",
        "document_patterns",
        "attribution",
    },
    Kind.COMPOSITIONAL_SKILLS: {"created_by", "task_description", "attribution"},
    Kind.FOUNDATIONAL_SKILLS: {"created_by", "task_description", "attribution"},
}


@dataclass
class Slot:
    """Where the messages about one field are shown."""

    field: str
    problems: list[dict] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "fe-" + _UNSAFE_ID.sub("-", self.field).strip("-")


@dataclass
class Input:
    name: str
    id: str
    label: str
    value: str
    slot: Slot
    multiline: bool = False

    @property
    def rows(self) -> int:
        lines = sum(1 + len(line) // 100 for line in self.value.split("\n"))
        return min(max(lines + 1, 2), 20)


@dataclass
class Pair:
    index: int
    question: Input
    answer: Input
    slot: Slot

    @property
    def number(self) -> int:
        return self.index + 1


@dataclass
class SeedView:
    seed: SeedExample
    index: int
    count: int
    inputs: list[Input]
    pairs: list[Pair] | None
    slot: Slot
    pairs_slot: Slot | None
    errors: list[dict] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


@dataclass
class Editor:
    leaf: Leaf
    problems: list[dict]
    inputs: list[Input]
    seeds: list[SeedView]
    slots: dict[str, Slot]
    errors: list[dict] = field(default_factory=list)

    @property
    def all_slots(self) -> list[Slot]:
        return list(self.slots.values())

    @property
    def seeds_slot(self) -> Slot:
        return self.slots["seed_examples"]

    @property
    def document_slot(self) -> Slot:
        return self.slots["document"]

    @property
    def version_slot(self) -> Slot:
        return self.slots["version"]

    @property
    def error_count(self) -> int:
        return sum(1 for p in self.problems if p.get("level") == "error")


def slot_field(name: str | None, known: dict[str, Any]) -> str | None:
    """The slot a problem belongs in: its own field's, else the nearest enclosing field the page shows."""
    if not name:
        return None
    match = _DOCUMENT_KEY.match(name)
    if match and f"document_{match.group(1)}" in known:
        return f"document_{match.group(1)}"
    while name and name not in known:
        shorter = _LAST_PART.sub("", name)
        if shorter == name:
            return None
        name = shorter
    return name or None


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(item) for item in value)
    return str(value)


def build_editor(
    leaf: Leaf,
    seeds: list[SeedExample],
    *,
    problems: list[dict] | None = None,
    posted: Any = None,
    posted_seed: int | None = None,
    errors: list[dict] = (),
) -> Editor:
    """The editor for `leaf`. `posted` (with `posted_seed`, the seed's pk, or None for the leaf form) is what a
    refused save sent: it is shown again as typed, with `errors` beside its fields."""
    slots: dict[str, Slot] = {name: Slot(name) for name in ("version", "seed_examples", "document")}
    shown = KIND_INPUTS.get(leaf.kind, KIND_INPUTS[Kind.COMPOSITIONAL_SKILLS])
    leaf_posted = posted if posted is not None and posted_seed is None else None
    inputs = []
    for name, (label, multiline) in LEAF_INPUTS.items():
        if name not in shown and getattr(leaf, name) is None:
            continue
        value = _value(getattr(leaf, name)) if leaf_posted is None else leaf_posted.get(name, "")
        slot = slots[name] = Slot(name)
        inputs.append(Input(name, f"id_{name}", label, value, slot, multiline))

    seed_views = []
    for index, seed in enumerate(seeds):
        seed_posted = posted if posted is not None and posted_seed == seed.pk else None
        seed_views.append(_seed_view(leaf, seed, index, len(seeds), slots, seed_posted))

    problems = list(leaf.problems if problems is None else problems)
    for problem in problems:
        target = slot_field(problem.get("field"), slots)
        if target:
            slots[target].problems.append(problem)

    editor = Editor(leaf, problems, inputs, seed_views, slots)
    if errors:
        _place_errors(editor, errors, posted_seed)
    return editor


def _seed_view(leaf: Leaf, seed: SeedExample, index: int, count: int, slots: dict[str, Slot], posted: Any) -> SeedView:
    base = f"seed_examples[{index}]"

    def make(name: str, field_name: str, input_id: str, label: str, current: Any) -> Input:
        value = _value(current) if posted is None else posted.get(name, "")
        slot = slots[field_name] = Slot(field_name)
        return Input(name, input_id, label, value, slot, multiline=True)

    slot = slots[base] = Slot(base)
    uses_pairs = seed.questions_and_answers is not None or (
        leaf.kind == Kind.KNOWLEDGE and seed.question is None and seed.answer is None
    )
    context_label = "Context" if leaf.kind == Kind.KNOWLEDGE else "Context (optional: grounded skills)"
    inputs = [make("context", f"{base}.context", f"seed-{seed.pk}-context", context_label, seed.context)]
    if not uses_pairs or seed.question is not None or seed.answer is not None:
        inputs.append(make("question", f"{base}.question", f"seed-{seed.pk}-question", "Question", seed.question))
        inputs.append(make("answer", f"{base}.answer", f"seed-{seed.pk}-answer", "Answer", seed.answer))

    pairs = pairs_slot = None
    if uses_pairs:
        pairs_slot = slots[f"{base}.questions_and_answers"] = Slot(f"{base}.questions_and_answers")
        pairs = []
        qas = seed.questions_and_answers if isinstance(seed.questions_and_answers, list) else []
        for j, qa in enumerate(qas):
            qa = qa if isinstance(qa, dict) else {}
            where = f"{base}.questions_and_answers[{j}]"
            pairs.append(
                Pair(
                    j,
                    make(
                        f"questions_and_answers-{j}-question",
                        f"{where}.question",
                        f"seed-{seed.pk}-qa-{j}-question",
                        f"Question {j + 1}",
                        qa.get("question"),
                    ),
                    make(
                        f"questions_and_answers-{j}-answer",
                        f"{where}.answer",
                        f"seed-{seed.pk}-qa-{j}-answer",
                        f"Answer {j + 1}",
                        qa.get("answer"),
                    ),
                    slots.setdefault(where, Slot(where)),
                )
            )
    return SeedView(seed, index, count, inputs, pairs, slot, pairs_slot)


def _place_errors(editor: Editor, errors: list[dict], posted_seed: int | None) -> None:
    """A refused save's errors name fields of the form (e.g. "question"): put them beside those inputs."""
    seed_view = next((view for view in editor.seeds if view.seed.pk == posted_seed), None)
    prefix = f"seed_examples[{seed_view.index}]." if seed_view else ""
    own = (
        {slot.field for slot in editor.slots.values() if slot.field.startswith(prefix)}
        if prefix
        else {i.slot.field for i in editor.inputs}
    )
    for error in errors:
        name = error.get("field")
        target = slot_field(prefix + name, {f: True for f in own}) if name and name != "revision" else None
        if target:
            editor.slots[target].problems.append(error)
        elif seed_view:
            seed_view.errors.append(error)
        else:
            editor.errors.append(error)


def preview_problems(
    leaf: Leaf,
    seeds: list[SeedExample],
    *,
    leaf_changes: dict[str, Any] | None = None,
    seed_pk: int | None = None,
    seed_changes: dict[str, Any] | None = None,
) -> list[dict]:
    """Validate the leaf as it would be with the changes, without saving anything."""

    def apply(obj, changes: dict[str, Any]):
        obj = copy.copy(obj)
        for name, value in changes.items():
            setattr(obj, name, stored_value(name, value))
        return obj

    draft = apply(leaf, leaf_changes or {})
    drafts = [apply(seed, seed_changes or {}) if seed.pk == seed_pk else seed for seed in seeds]
    return [problem.as_dict() for problem in validate_qna(leaf_qna(draft, drafts), leaf.path)]
