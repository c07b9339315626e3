"""Edits of one leaf: each locks the leaf, checks the caller saw its latest revision, and records history.

Seeds (`seeds.py`) and documents (`documents.py`) are parts of their leaf: their writes use `lock_leaf` and
`record_change` from here.
"""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from curation.models import Kind, Leaf, LeafRevision
from curation.qna_map import EDITABLE_LEAF_FIELDS, stored_value
from curation.selectors import leaf_snapshot
from curation.services.content import clean_leaf_path, leaf_warnings
from curation.taxonomy import Problem, content_hash, leaf_kind, validate_qna
from curation.taxonomy.changes import describe_changes
from labweb.errors import ConflictError, LabError


def lock_leaf(leaf: Leaf, expected_revision: int | None) -> Leaf:
    locked = Leaf.objects.select_for_update().filter(pk=leaf.pk).first()
    if locked is None:
        raise LabError(f"The leaf {leaf.path} no longer exists.", path=leaf.path)
    if expected_revision is not None and locked.revision != int(expected_revision):
        who = f" by {locked.updated_by}" if locked.updated_by_id else ""
        raise ConflictError(
            f"{locked.path} was changed{who} since you opened it (revision {expected_revision}, now "
            f"{locked.revision}). Reload it and apply your change again.",
            path=locked.path,
            field="revision",
        )
    return locked


def _problems(leaf: Leaf, qna: dict, documents: dict) -> list[Problem]:
    return validate_qna(qna, leaf.path) + leaf_warnings(leaf, documents)


def record_change(leaf: Leaf, *, user, action: str, before: dict | None) -> Leaf:
    """Revalidate, rehash, bump the revision and record it; a change that changes nothing records nothing."""
    seeds = list(leaf.seeds.order_by("position"))
    documents = dict(leaf.documents.values_list("name", "sha256"))
    after = leaf_snapshot(leaf, seeds, documents)
    changes = describe_changes(before, after)
    if before is not None and not changes:
        return leaf
    problems = _problems(leaf, after["qna"], documents)
    leaf.problems = [p.as_dict() for p in problems]
    leaf.is_valid = not any(p.level == "error" for p in problems)
    leaf.content_hash = content_hash(after["qna"], documents, leaf.attribution)
    if before is not None:
        leaf.revision += 1
    leaf.updated_by = user
    leaf.save()
    LeafRevision.objects.create(
        leaf=leaf,
        path=leaf.path,
        number=leaf.revision,
        action=action,
        author=user,
        changes=changes,
        snapshot=after,
        content_hash=leaf.content_hash,
    )
    return leaf


def clean_fields(fields: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise LabError(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    return {name: stored_value(name, value) for name, value in fields.items()}


@transaction.atomic
def leaf_create(*, path: str, user: AbstractBaseUser | None, **fields: Any) -> Leaf:
    """Create an empty leaf (schema version 3) at a free folder path; it stays invalid until it has seeds."""
    path = clean_leaf_path(path)
    if Leaf.objects.filter(path=path).exists():
        raise LabError(f"A leaf already exists at {path}.", field="path", path=path)
    fields = clean_fields(fields, EDITABLE_LEAF_FIELDS)
    fields.setdefault("version", 3)
    fields.setdefault("created_by", getattr(user, "username", None) or None)
    leaf = Leaf(path=path, **fields)
    leaf.kind = leaf_kind(path, {})
    if leaf.kind == Kind.KNOWLEDGE and leaf.domain is None:
        leaf.domain = path.rsplit("/", 1)[-1].replace("_", " ")
    if leaf.kind != Kind.KNOWLEDGE and leaf.task_description is None:
        leaf.task_description = ""
    leaf.save()
    return record_change(leaf, user=user, action=LeafRevision.Action.CREATE, before=None)


@transaction.atomic
def leaf_update(*, leaf: Leaf, user, expected_revision: int | None, **fields: Any) -> Leaf:
    """Change the leaf's own fields (not its seeds or documents)."""
    leaf = lock_leaf(leaf, expected_revision)
    fields = clean_fields(fields, EDITABLE_LEAF_FIELDS)
    before = leaf_snapshot(leaf)
    for name, value in fields.items():
        setattr(leaf, name, value)
    return record_change(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)


@transaction.atomic
def leaf_move(*, leaf: Leaf, new_path: str, user, expected_revision: int | None) -> Leaf:
    """Move (rename) a leaf to another folder; its kind follows the new root."""
    leaf = lock_leaf(leaf, expected_revision)
    new_path = clean_leaf_path(new_path)
    if new_path == leaf.path:
        return leaf
    if Leaf.objects.filter(path=new_path).exists():
        raise LabError(f"A leaf already exists at {new_path}.", field="path", path=new_path)
    before = leaf_snapshot(leaf)
    leaf.path = new_path
    leaf.kind = leaf_kind(new_path, before["qna"])
    return record_change(leaf, user=user, action=LeafRevision.Action.MOVE, before=before)


def deletion_revision(leaf: Leaf, *, user, reason: str, snapshot: dict | None = None) -> LeafRevision:
    """The revision (unsaved) that records a leaf's deletion: its last state, which its history keeps showing."""
    return LeafRevision(
        leaf=leaf,
        path=leaf.path,
        number=leaf.revision + 1,
        action=LeafRevision.Action.DELETE,
        author=user,
        changes=[reason],
        snapshot=leaf_snapshot(leaf) if snapshot is None else snapshot,
        content_hash=leaf.content_hash,
    )


@transaction.atomic
def leaf_delete(*, leaf: Leaf, user, expected_revision: int | None) -> None:
    leaf = lock_leaf(leaf, expected_revision)
    deletion_revision(leaf, user=user, reason="deleted").save()
    leaf.delete()
