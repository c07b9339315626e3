"""Edits of one leaf: each locks the leaf, checks the caller saw its latest revision, and records history."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from curation.models import Document, Kind, Leaf, LeafRevision, SeedExample, TaxonomySnapshot
from curation.selectors import LEAF_TEXT_FIELDS, leaf_snapshot
from curation.services.content import clean_document_name, clean_leaf_path, leaf_warnings, sha256_text
from curation.taxonomy import Problem, content_hash, leaf_kind, validate_qna
from curation.taxonomy.changes import describe_changes
from labweb.errors import ConflictError, LabError

EDITABLE_LEAF_FIELDS = (
    *LEAF_TEXT_FIELDS,
    "version",
    "document_repo",
    "document_commit",
    "document_patterns",
    "attribution",
)
OPTIONAL_TEXT = {"task_description", "domain", "document_outline", "document_repo", "document_commit", "context"}
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024


def _lock(leaf: Leaf, expected_revision: int | None) -> Leaf:
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


def _finish(leaf: Leaf, *, user, action: str, before: dict | None) -> Leaf:
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


def _clean_fields(fields: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise LabError(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    cleaned = {}
    for name, value in fields.items():
        if isinstance(value, str) and name in OPTIONAL_TEXT and not value.strip():
            value = None
        cleaned[name] = value
    return cleaned


@transaction.atomic
def leaf_create(*, path: str, user: AbstractBaseUser | None, **fields: Any) -> Leaf:
    """Create an empty leaf (schema version 3) at a free folder path; it stays invalid until it has seeds."""
    path = clean_leaf_path(path)
    if Leaf.objects.filter(path=path).exists():
        raise LabError(f"A leaf already exists at {path}.", field="path", path=path)
    fields = _clean_fields(fields, EDITABLE_LEAF_FIELDS)
    fields.setdefault("version", 3)
    fields.setdefault("created_by", getattr(user, "username", None) or None)
    leaf = Leaf(path=path, **fields)
    leaf.kind = leaf_kind(path, {})
    if leaf.kind == Kind.KNOWLEDGE and leaf.domain is None:
        leaf.domain = path.rsplit("/", 1)[-1].replace("_", " ")
    if leaf.kind != Kind.KNOWLEDGE and leaf.task_description is None:
        leaf.task_description = ""
    leaf.save()
    return _finish(leaf, user=user, action=LeafRevision.Action.CREATE, before=None)


@transaction.atomic
def leaf_update(*, leaf: Leaf, user, expected_revision: int | None, **fields: Any) -> Leaf:
    """Change the leaf's own fields (not its seeds or documents)."""
    leaf = _lock(leaf, expected_revision)
    fields = _clean_fields(fields, EDITABLE_LEAF_FIELDS)
    before = leaf_snapshot(leaf)
    for name, value in fields.items():
        setattr(leaf, name, value)
    return _finish(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)


@transaction.atomic
def leaf_move(*, leaf: Leaf, new_path: str, user, expected_revision: int | None) -> Leaf:
    """Move (rename) a leaf to another folder; its kind follows the new root."""
    leaf = _lock(leaf, expected_revision)
    new_path = clean_leaf_path(new_path)
    if new_path == leaf.path:
        return leaf
    if Leaf.objects.filter(path=new_path).exists():
        raise LabError(f"A leaf already exists at {new_path}.", field="path", path=new_path)
    before = leaf_snapshot(leaf)
    leaf.path = new_path
    leaf.kind = leaf_kind(new_path, before["qna"])
    return _finish(leaf, user=user, action=LeafRevision.Action.MOVE, before=before)


@transaction.atomic
def leaf_delete(*, leaf: Leaf, user, expected_revision: int | None) -> None:
    leaf = _lock(leaf, expected_revision)
    before = leaf_snapshot(leaf)
    LeafRevision.objects.create(
        leaf=leaf,
        path=leaf.path,
        number=leaf.revision + 1,
        action=LeafRevision.Action.DELETE,
        author=user,
        changes=["deleted"],
        snapshot=before,
        content_hash=leaf.content_hash,
    )
    leaf.delete()


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
    fields = _clean_fields(fields, ("context", "question", "answer", "questions_and_answers"))
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
    leaf = _lock(leaf, expected_revision)
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
    _finish(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
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
    leaf = _lock(seed.leaf, expected_revision)
    fields = _seed_fields(leaf, fields)
    before = leaf_snapshot(leaf)
    seed = _fresh_seed(seed)
    for name, value in fields.items():
        setattr(seed, name, value)
    seed.save()
    _finish(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
    return seed


@transaction.atomic
def seed_delete(*, seed: SeedExample, user, expected_revision: int | None) -> Leaf:
    leaf = _lock(seed.leaf, expected_revision)
    before = leaf_snapshot(leaf)
    SeedExample.objects.filter(pk=seed.pk).delete()
    _renumber(list(leaf.seeds.order_by("position")))
    return _finish(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)


@transaction.atomic
def seed_move(*, seed: SeedExample, user, expected_revision: int | None, position: int) -> Leaf:
    """Move a seed example to `position` (0-based) among its leaf's seeds."""
    leaf = _lock(seed.leaf, expected_revision)
    before = leaf_snapshot(leaf)
    moving = _fresh_seed(seed)
    seeds = [s for s in leaf.seeds.order_by("position") if s.pk != seed.pk]
    seeds.insert(max(0, min(int(position), len(seeds))), moving)
    _renumber(seeds)
    return _finish(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)


@transaction.atomic
def document_add(*, leaf: Leaf, user, expected_revision: int | None, name: str, content: str | bytes) -> Document:
    """Attach a Markdown source document to a knowledge leaf, replacing one of the same name."""
    leaf = _lock(leaf, expected_revision)
    if leaf.kind != Kind.KNOWLEDGE:
        raise LabError(
            f"{leaf.path} is a skills leaf: only knowledge leaves take source documents.", field="leaf", path=leaf.path
        )
    name = clean_document_name(name)
    if isinstance(content, bytes):
        if len(content) > MAX_DOCUMENT_BYTES:
            raise LabError(
                f"{name} is larger than the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB limit.", field="content"
            )
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = content[: exc.start].count(b"\n") + 1
            raise LabError(f"{name} is not UTF-8 text.", field="content", line=line, path=name) from None
    before = leaf_snapshot(leaf)
    document, _ = Document.objects.update_or_create(
        leaf=leaf,
        name=name,
        defaults={
            "content": content,
            "sha256": sha256_text(content),
            "size": len(content.encode("utf-8")),
            "created_by": user,
        },
    )
    _finish(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
    return document


@transaction.atomic
def document_delete(*, document: Document, user, expected_revision: int | None) -> Leaf:
    leaf = _lock(document.leaf, expected_revision)
    before = leaf_snapshot(leaf)
    Document.objects.filter(pk=document.pk).delete()
    return _finish(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)


def snapshot_create(*, name: str, user) -> TaxonomySnapshot:
    """Record the current content hash of every leaf as a named baseline for diff."""
    if not (name or "").strip():
        raise LabError("A snapshot needs a name.", field="name")
    return TaxonomySnapshot.objects.create(
        name=name.strip(), created_by=user, hashes=dict(Leaf.objects.values_list("path", "content_hash"))
    )
