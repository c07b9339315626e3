"""What LabWeb's database can hold, kept here so that validation (no Django) and the models share one number."""

import re

LEAF_PATH_MAX = 1000
CREATED_BY_MAX = 200
DOMAIN_MAX = 500
DOCUMENT_REPO_MAX = 1000
DOCUMENT_COMMIT_MAX = 200
DOCUMENT_NAME_MAX = 255

# qna.yaml keys stored in a column of bounded length.
FIELD_MAX = {
    "created_by": CREATED_BY_MAX,
    "domain": DOMAIN_MAX,
    "document.repo": DOCUMENT_REPO_MAX,
    "document.commit": DOCUMENT_COMMIT_MAX,
}

# PostgreSQL text and jsonb refuse NUL; UTF-8 cannot encode lone surrogates (YAML "\ud800" escapes make them).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_reason(text: str) -> str | None:
    match = UNSTORABLE.search(text)
    if match is None:
        return None
    char = match.group()
    if char == "\x00":
        return "holds a NUL character (\\0), which LabWeb's database cannot store"
    return f"holds a lone surrogate (\\u{ord(char):04x}), which is not a character UTF-8 can store"
