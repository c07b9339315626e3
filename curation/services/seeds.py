"""Seed examples of a leaf: each change is a change of its leaf (revision, history, validation)."""

from typing import Any

from django.db import transaction

from curation.models import Kind, Leaf, LeafRevision, SeedExample
from curation.qna_map import SEED_FIELDS
from curation.selectors import leaf_snapshot
from curation.services.leaves import clean_fields, lock_leaf, record_change
from labweb.errors import LabError


def _fresh_seed(seed: SeedExample) -> SeedExample:
    found = SeedExample.objects.filter(pk=seed.pk).first()
    if found is None:
        raise LabError("This seed example was deleted meanwhile. Reload the leaf.", field="seed")
    return found


def _refuse_blank(value: Any, field: str) -> None:
    # Empty is a seed still being written (the leaf shows it invalid); spaces alone pass the schema but
    # give the teacher nothing, so they are refused where they are typed.
    if isinstance(value, str) and value and not value.strip():
        raise LabError(
            f"The {field.rsplit('.', 1)[-1]} holds only whitespace; write it out or leave it empty.", field=field
        )


def _seed_fields(leaf: Leaf, fields: dict[str, Any]) -> dict[str, Any]:
    fields = clean_fields(fields, SEED_FIELDS)
    for name in ("question", "answer"):
        _refuse_blank(fields.get(name), name)
    qas = fields.get("questions_and_answers")
    if qas is not None:
        if not isinstance(qas, list) or not all(isinstance(qa, dict) for qa in qas):
            raise LabError(
                "questions_and_answers must be a list of {question, answer} pairs.", field="questions_and_answers"
            )
        for index, qa in enumerate(qas):
            for name in ("question", "answer"):
                _refuse_blank(qa.get(name), f"questions_and_answers-{index}-{name}")
        fields["questions_and_answers"] = [
            {**qa, "question": qa.get("question", ""), "answer": qa.get("answer", "")} for qa in qas
        ]
    return fields


@transaction.atomic
def seed_add(
    *, leaf: Leaf, user, expected_revision: int | None, position: int | None = None, **fields: Any
) -> SeedExample:
    """Add a seed example (at the end, or before `position`)."""
    leaf = lock_leaf(leaf, expected_revision)
    fields = _seed_fields(leaf, fields)
    # A new seed takes the shape of the leaf's seeds (old version-1 knowledge files use question/answer).
    existing = leaf.seeds.order_by("position").first()
    if existing.questions_and_answers is not None if existing else leaf.kind == Kind.KNOWLEDGE:
        fields.setdefault("questions_and_answers", [{"question": "", "answer": ""} for _ in range(3)])
        fields.setdefault("context", "")
    else:
        fields.setdefault("question", "")
        fields.setdefault("answer", "")
    before = leaf_snapshot(leaf)
    seeds = list(leaf.seeds.order_by("position"))
    position = len(seeds) if position is None else max(0, min(int(position), len(seeds)))
    seed = SeedExample(leaf=leaf, position=position, **fields)
    seeds.insert(position, seed)
    _renumber(seeds)
    seed.save()
    record_change(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
    return seed


def _renumber(seeds: list[SeedExample]) -> None:
    # Two passes: positions are not unique-constrained, but keeping them dense keeps exports stable.
    changed = []
    for index, seed in enumerate(seeds):
        if seed.position != index or seed.pk is None:
            seed.position = index
            if seed.pk is not None:
                changed.append(seed)
    SeedExample.objects.bulk_update(changed, ["position"])


@transaction.atomic
def seed_update(*, seed: SeedExample, user, expected_revision: int | None, **fields: Any) -> SeedExample:
    leaf = lock_leaf(seed.leaf, expected_revision)
    fields = _seed_fields(leaf, fields)
    before = leaf_snapshot(leaf)
    seed = _fresh_seed(seed)
    for name, value in fields.items():
        setattr(seed, name, value)
    seed.save()
    record_change(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
    return seed


@transaction.atomic
def seed_delete(*, seed: SeedExample, user, expected_revision: int | None) -> Leaf:
    leaf = lock_leaf(seed.leaf, expected_revision)
    before = leaf_snapshot(leaf)
    SeedExample.objects.filter(pk=seed.pk).delete()
    _renumber(list(leaf.seeds.order_by("position")))
    return record_change(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)


@transaction.atomic
def seed_move(*, seed: SeedExample, user, expected_revision: int | None, position: int) -> Leaf:
    """Move a seed example to `position` (0-based) among its leaf's seeds."""
    leaf = lock_leaf(seed.leaf, expected_revision)
    before = leaf_snapshot(leaf)
    moving = _fresh_seed(seed)
    seeds = [s for s in leaf.seeds.order_by("position") if s.pk != seed.pk]
    seeds.insert(max(0, min(int(position), len(seeds))), moving)
    _renumber(seeds)
    return record_change(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
