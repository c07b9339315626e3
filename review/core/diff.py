"""A word-level diff of an edited text against its original, as a list of (op, text) runs."""

import difflib
import re

SAME = "same"
ADDED = "added"
REMOVED = "removed"

# Words with the whitespace after them, so joining the runs of one side gives that side back exactly.
_TOKEN = re.compile(r"\S+\s*|\s+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """Runs of unchanged, removed and added words; joining same+removed gives `before`, same+added `after`."""
    old, new = tokens(before), tokens(after)
    # Compare words without their trailing whitespace, so a reflowed line is not a change of every word.
    matcher = difflib.SequenceMatcher(a=[t.strip() for t in old], b=[t.strip() for t in new], autojunk=False)
    runs: list[tuple[str, str]] = []

    def add(op: str, text: str) -> None:
        if not text:
            return
        if runs and runs[-1][0] == op:
            runs[-1] = (op, runs[-1][1] + text)
        else:
            runs.append((op, text))

    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            add(SAME, "".join(new[j1:j2]))
        else:
            add(REMOVED, "".join(old[i1:i2]))
            add(ADDED, "".join(new[j1:j2]))
    return runs
