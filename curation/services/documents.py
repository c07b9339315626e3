"""Markdown source documents attached to a knowledge leaf; attaching or removing one is a change of the leaf."""

from django.db import transaction

from curation.models import Document, Kind, Leaf, LeafRevision
from curation.selectors import leaf_snapshot
from curation.services.content import clean_document_name, sha256_text
from curation.services.leaves import lock_leaf, record_change
from labweb.errors import LabError

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024


@transaction.atomic
def document_add(*, leaf: Leaf, user, expected_revision: int | None, name: str, content: str | bytes) -> Document:
    """Attach a Markdown source document to a knowledge leaf, replacing one of the same name."""
    leaf = lock_leaf(leaf, expected_revision)
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
    record_change(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
    return document


@transaction.atomic
def document_delete(*, document: Document, user, expected_revision: int | None) -> Leaf:
    leaf = lock_leaf(document.leaf, expected_revision)
    before = leaf_snapshot(leaf)
    Document.objects.filter(pk=document.pk).delete()
    return record_change(leaf, user=user, action=LeafRevision.Action.UPDATE, before=before)
