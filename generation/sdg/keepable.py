"""Whether a teacher's answer is text a person would keep: judges score content, and a lenient one passes
garbage bytes and fragments cut off mid-sentence, which must not reach review as samples."""

import re
import unicodedata

# A UTF-8 text read as Latin-1 (or Windows-1252) somewhere on its way: "Ã©" for "é", "â€™" for "'".
_MOJIBAKE = re.compile("[ÃÂ][\u0080-\u00bf\u2018-\u203a\u0152-\u0178]|â€")
# A sentence is not over after these: an answer ending in one was cut off.
_DANGLING = re.compile(r"(?:[,;(\[{/\-–—]|\b(?:and|or|but|the|a|an|of|that|with))\s*\Z", re.I)
_CONTROL = {"Cc", "Cf", "Co", "Cs", "Cn"}


def unkeepable(text: str, *, truncated: bool = False, answer: bool = True) -> str | None:
    """Why `text` is not an answer a person would keep, or None when it is. `truncated`: the teacher stopped at
    its token limit; `answer`: it must read as finished (a question may end without punctuation)."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    if truncated:
        return "cut off at the token limit"
    if any(ch == "\ufffd" or (unicodedata.category(ch) in _CONTROL and ch not in "\t\n\r") for ch in stripped):
        return "holds control or undecodable characters"
    if _MOJIBAKE.search(stripped):
        return "holds mis-decoded characters"
    visible = [ch for ch in stripped if not ch.isspace()]
    if len(visible) >= 8 and sum(ch.isalnum() for ch in visible) < len(visible) / 2:
        return "is mostly symbols, not words"
    words = stripped.lower().split()
    if len(words) >= 10 and max(words.count(word) for word in set(words)) > len(words) / 2:
        return "repeats one word"
    if answer and _DANGLING.search(stripped):
        return "ends mid-sentence"
    return None
