"""Checks every write shares: the warnings LabWeb adds to the schema's, content hashes, path and name rules."""

import hashlib
import posixpath
import re

from curation.models import Kind, Leaf
from curation.taxonomy import KINDS, Problem
from labweb.errors import LabError

_SEGMENT = re.compile(r"^[^/\\\x00-\x1f]+$")


def leaf_warnings(leaf: Leaf, documents: dict) -> list[Problem]:
    """What LabWeb adds to the schema's verdict: things that do not make a file invalid but stop generation."""
    if leaf.kind == Kind.KNOWLEDGE and not documents:
        return [
            Problem(
                leaf.qna_path,
                "No source document is attached; generation needs one.",
                field="document",
                level="warning",
            )
        ]
    return []


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clean_leaf_path(path: str) -> str:
    """A new leaf's folder path, checked: under one of the three roots, no empty or dot segments."""
    cleaned = "/".join(part.strip() for part in (path or "").strip().strip("/").split("/"))
    parts = cleaned.split("/")
    if not cleaned or any(not part or part in (".", "..") or part.startswith(".") for part in parts):
        raise LabError(
            f'"{path}" is not a valid folder path: use names separated by "/", without "." or "..".', field="path"
        )
    if not all(_SEGMENT.match(part) for part in parts):
        raise LabError(f'"{path}" contains characters not allowed in a folder name.', field="path")
    if any(part.lower() == "qna.yaml" for part in parts):
        raise LabError(
            f'"{path}" names the qna.yaml file: a leaf\'s path is the folder that holds it, without "/qna.yaml".',
            field="path",
        )
    if parts[0] not in KINDS:
        raise LabError(f'"{path}" must start with one of: {", ".join(KINDS)}.', field="path")
    if len(parts) < 2:
        raise LabError(f'"{path}" is a taxonomy root; a leaf lives in a folder below it.', field="path")
    if len(cleaned) > 1000:
        raise LabError("The path is longer than 1000 characters.", field="path")
    return cleaned


def clean_document_name(name: str) -> str:
    base = posixpath.basename((name or "").replace("\\", "/")).strip()
    if not base or base.startswith(".") or not base.lower().endswith((".md", ".markdown")):
        raise LabError(f'"{name}" is not a Markdown file name (it must end with .md).', field="name")
    return base
