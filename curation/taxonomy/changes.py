"""What changed between two versions of a leaf, in words a reviewer reads in the history."""

import difflib
from typing import Any

_LABELS = {
    "version": "schema version",
    "created_by": "created_by",
    "task_description": "task description",
    "domain": "domain",
    "document_outline": "document outline",
    "document": "document reference",
}


def describe_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if before is None and after is None:
        return []
    if before is None:
        return ["created"]
    if after is None:
        return ["deleted"]
    changes = []
    if before.get("path") != after.get("path"):
        changes.append(f"moved from {before.get('path')} to {after.get('path')}")
    old, new = before.get("qna", {}), after.get("qna", {})
    for key in sorted(set(old) | set(new)):
        if key == "seed_examples" or old.get(key) == new.get(key):
            continue
        changes.append(f"{_LABELS.get(key, key)} changed")
    changes += _seed_changes(old.get("seed_examples") or [], new.get("seed_examples") or [])
    if before.get("attribution") != after.get("attribution"):
        changes.append("attribution changed")
    old_docs, new_docs = before.get("documents", {}), after.get("documents", {})
    for name in sorted(set(new_docs) - set(old_docs)):
        changes.append(f"document {name} added")
    for name in sorted(set(old_docs) - set(new_docs)):
        changes.append(f"document {name} removed")
    for name in sorted(n for n in set(old_docs) & set(new_docs) if old_docs[n] != new_docs[n]):
        changes.append(f"document {name} changed")
    return changes


def _seed_changes(old: list, new: list) -> list[str]:
    if old == new:
        return []
    if sorted(map(repr, old)) == sorted(map(repr, new)):
        return ["seed examples reordered"]
    # Align the two lists so that deleting seed 2 reads as one removal, not as every later seed changing.
    changes = []
    matcher = difflib.SequenceMatcher(a=list(map(repr, old)), b=list(map(repr, new)), autojunk=False)
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        paired = min(a2 - a1, b2 - b1) if tag == "replace" else 0
        for offset in range(paired):
            before, after = old[a1 + offset], new[b1 + offset]
            both = isinstance(before, dict) and isinstance(after, dict)
            fields = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)) if both else []
            changes.append(f"seed example {b1 + offset + 1}: {', '.join(fields) or 'content'} changed")
        changes += [f"seed example {index + 1} removed" for index in range(a1 + paired, a2)]
        changes += [f"seed example {index + 1} added" for index in range(b1 + paired, b2)]
    return changes
