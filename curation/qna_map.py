"""How a qna.yaml maps onto the curation models, both ways, and the one list of the fields a leaf keeps from it.

Serializers, forms, the editor, import and export name the leaf's fields through the tuples below.
"""

from collections.abc import Iterable
from typing import Any

from curation.models import Leaf, SeedExample
from curation.taxonomy import leaf_kind

# Top-level strings of a qna.yaml, each a Leaf field of the same name.
LEAF_TEXT_FIELDS = ("task_description", "domain", "created_by", "document_outline")
# The `document:` mapping of a knowledge qna.yaml: (Leaf field, key in the file).
LEAF_DOCUMENT_FIELDS = (("document_repo", "repo"), ("document_commit", "commit"), ("document_patterns", "patterns"))
# What a person may edit on a leaf; attribution is attribution.txt beside the qna.yaml.
EDITABLE_LEAF_FIELDS = ("version", *LEAF_TEXT_FIELDS, *(name for name, _ in LEAF_DOCUMENT_FIELDS), "attribution")
# Every Leaf field that holds the leaf's content (what an import sets).
LEAF_CONTENT_FIELDS = ("kind", *EDITABLE_LEAF_FIELDS, "extra")
SEED_FIELDS = ("context", "question", "answer", "questions_and_answers")
TOP_KEYS = ("version", *LEAF_TEXT_FIELDS, "seed_examples", "document")
# Text that is absent from the file when left blank, rather than an empty string in it.
OPTIONAL_TEXT = frozenset(
    {"task_description", "domain", "document_outline", "document_repo", "document_commit", "context"}
)


def stored_value(name: str, value: Any) -> Any:
    """A field's value as the leaf keeps it: an optional text left blank is absent (None)."""
    if name in OPTIONAL_TEXT and isinstance(value, str) and not value.strip():
        return None
    return value


def seed_qna(seed: SeedExample) -> dict:
    data: dict = {name: getattr(seed, name) for name in SEED_FIELDS if getattr(seed, name) is not None}
    data.update(seed.extra or {})
    return data


def leaf_qna(leaf: Leaf, seeds: Iterable[SeedExample] | None = None) -> dict:
    """The leaf as the dict its `qna.yaml` holds."""
    data: dict = {}
    if leaf.version is not None:
        data["version"] = leaf.version
    for name in LEAF_TEXT_FIELDS:
        value = getattr(leaf, name)
        if value is not None:
            data[name] = value
    if seeds is None:
        seeds = leaf.seeds.all()
    data["seed_examples"] = [seed_qna(seed) for seed in seeds]
    document = {key: getattr(leaf, name) for name, key in LEAF_DOCUMENT_FIELDS if getattr(leaf, name) is not None}
    if document:
        data["document"] = document
    data.update(leaf.extra or {})
    return data


def apply_qna(leaf: Leaf, data: dict) -> list[SeedExample]:
    """Set the leaf's fields from qna data; return its seed examples, unsaved."""
    version = data.get("version")
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # `version: 3.0` is version 3 to the official parser; the file keeps its 3.0
    leaf.version = version if isinstance(version, int) and not isinstance(version, bool) else None
    for name in LEAF_TEXT_FIELDS:
        setattr(leaf, name, data.get(name))
    document = data.get("document")
    document = document if isinstance(document, dict) else {}
    for name, key in LEAF_DOCUMENT_FIELDS:
        setattr(leaf, name, document.get(key))
    leaf.extra = {key: value for key, value in data.items() if key not in TOP_KEYS}
    leaf.kind = leaf_kind(leaf.path, data)
    return [
        SeedExample(
            leaf=leaf,
            position=index,
            **{key: seed.get(key) for key in SEED_FIELDS},
            extra={key: value for key, value in seed.items() if key not in SEED_FIELDS},
        )
        for index, seed in enumerate(data.get("seed_examples") or [])
    ]
