"""Forms of the curation pages. They only parse what a browser posts; the services decide what is allowed."""

import re
from typing import Any

from django import forms

from curation.models import Leaf, SeedExample
from curation.qna_map import EDITABLE_LEAF_FIELDS
from curation.services.imports import ImportSource

PAIR_FIELD = re.compile(r"^questions_and_answers-(\d+)-(question|answer)$")


def _text(value: str | None) -> str:
    # Browsers post CRLF line ends; the taxonomy's files use LF.
    return (value or "").replace("\r\n", "\n").replace("\r", "\n")


class TextField(forms.CharField):
    """Text exactly as typed: whitespace is content in a qna.yaml, so nothing is stripped."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        return _text(super().to_python(value))


class RevisionForm(forms.Form):
    """Every edit names the leaf revision it was made against (optimistic locking)."""

    revision = forms.IntegerField(min_value=1, widget=forms.HiddenInput)


class LeafFieldsForm(RevisionForm):
    created_by = TextField(max_length=200)
    task_description = TextField()
    domain = TextField(max_length=500)
    document_outline = TextField()
    document_repo = TextField(max_length=1000)
    document_commit = TextField(max_length=200)
    document_patterns = TextField(help_text="One pattern per line, e.g. *.md")
    attribution = TextField()

    def changes(self, leaf: Leaf) -> dict[str, Any]:
        """The posted fields that differ from the leaf. A field the page did not show is not posted, so kept."""
        changes: dict[str, Any] = {}
        for name in self.fields:
            if name == "revision" or name not in self.data or name not in self.cleaned_data:
                continue
            value = self.cleaned_data[name]
            current = getattr(leaf, name)
            if name == "document_patterns":
                value = [line.strip() for line in value.split("\n") if line.strip()] or None
                if value != (current or None):
                    changes[name] = value
            elif value != (current or ""):
                changes[name] = value
        return changes


assert set(LeafFieldsForm.base_fields) == set(EDITABLE_LEAF_FIELDS) - {"version"} | {"revision"}


class SeedForm(RevisionForm):
    """A seed example: question/answer/context for skills; context and Q&A pairs for knowledge.

    Pairs are posted as questions_and_answers-<i>-question / -answer; the add_pair and remove_pair buttons
    edit the list in the same save, so they work without JavaScript.
    """

    context = TextField()
    question = TextField()
    answer = TextField()
    add_pair = forms.BooleanField(required=False)
    remove_pair = forms.IntegerField(required=False, min_value=0)

    def pairs(self, seed: SeedExample) -> list[dict] | None:
        indexes = sorted({int(m.group(1)) for m in map(PAIR_FIELD.match, self.data) if m})
        if not indexes and not self.cleaned_data.get("add_pair"):
            return None
        existing = seed.questions_and_answers if isinstance(seed.questions_and_answers, list) else []
        pairs = []
        for index in indexes:
            old = existing[index] if index < len(existing) and isinstance(existing[index], dict) else {}
            pairs.append(
                {
                    **old,
                    "question": _text(self.data.get(f"questions_and_answers-{index}-question")),
                    "answer": _text(self.data.get(f"questions_and_answers-{index}-answer")),
                }
            )
        remove = self.cleaned_data.get("remove_pair")
        if remove is not None and remove < len(pairs):
            del pairs[remove]
        if self.cleaned_data.get("add_pair"):
            pairs.append({"question": "", "answer": ""})
        return pairs

    def changes(self, seed: SeedExample) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for name in ("context", "question", "answer"):
            if name not in self.data or name not in self.cleaned_data:
                continue
            if self.cleaned_data[name] != (getattr(seed, name) or ""):
                changes[name] = self.cleaned_data[name]
        pairs = self.pairs(seed)
        if pairs is not None and pairs != seed.questions_and_answers:
            changes["questions_and_answers"] = pairs
        return changes


class SeedMoveForm(RevisionForm):
    position = forms.IntegerField(min_value=0)


class LeafPathForm(forms.Form):
    path = forms.CharField(
        max_length=1000,
        help_text="Folder names separated by “/”, e.g. compositional_skills/writing/freeform/haiku",
        widget=forms.TextInput(attrs={"autofocus": True, "placeholder": "compositional_skills/writing/freeform/haiku"}),
    )


class LeafMoveForm(RevisionForm):
    path = forms.CharField(max_length=1000, label="New path")


class LeafDeleteForm(RevisionForm):
    confirm = forms.BooleanField(label="Yes, delete this leaf")


class DocumentForm(RevisionForm):
    file = forms.FileField(label="Markdown file")


class SnapshotForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)


class ImportForm(forms.Form):
    """One of the import page's sources with what to do with it; the services decide whether it may be read.
    Each subclass says what its source is (`source() -> ImportSource`)."""

    kind = ""
    prune = forms.BooleanField(required=False, label="Delete the leaves that the source does not hold (prune)")
    dry_run = forms.BooleanField(required=False, label="Dry run: only list what the import would change")
    # Posted by the confirmation a prune's dry run shows, so that the second post imports.
    confirm_prune = forms.BooleanField(required=False, widget=forms.HiddenInput)
    allow_remove_all = forms.BooleanField(required=False, label="Yes, remove every leaf of the taxonomy")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"id_{self.kind}_%s")
        super().__init__(*args, **kwargs)


class ImportArchiveForm(ImportForm):
    kind = "archive"
    archive = forms.FileField(label="Archive", help_text=".tar.gz, .tgz, .tar, .tar.bz2, .tar.xz or .zip")
    field_order = ["archive"]

    def source(self) -> ImportSource:
        upload = self.cleaned_data["archive"]
        return ImportSource.upload(upload, upload.name)


class ImportDirectoryForm(ImportForm):
    kind = "directory"
    directory = forms.CharField(max_length=1000, label="Folder path", help_text="A folder on the server")
    field_order = ["directory"]

    def source(self) -> ImportSource:
        return ImportSource.directory(self.cleaned_data["directory"])


class ImportGitForm(ImportForm):
    kind = "git"
    repository = forms.CharField(max_length=1000, label="Repository path", help_text="A git repository on the server")
    ref = forms.CharField(max_length=200, required=False, initial="HEAD", label="Revision (branch, tag or commit)")
    field_order = ["repository", "ref"]

    def source(self) -> ImportSource:
        return ImportSource.git(self.cleaned_data["repository"], self.cleaned_data.get("ref"))


IMPORT_FORMS: dict[str, type[ImportForm]] = {
    "archive": ImportArchiveForm,
    "directory": ImportDirectoryForm,
    "git": ImportGitForm,
}
