"""Write a leaf back into the `qna.yaml` it was imported from, changing only what was edited in LabWeb.

An unedited leaf is its original text, byte for byte (line endings and BOM included). An edited one is the
original with only the lines of the edited nodes replaced: a changed value is rewritten with its key as
`dump_qna` writes it, at the key's indentation; list items added, removed or moved take or leave their own lines,
the lines between items (blank lines, comments) staying where they were; everything else keeps its bytes.
Where that splice cannot be made (an edit of an anchored or aliased node, the first key of a list item
removed), ruamel.yaml's round-trip mode applies the edit to the document (comments, quoting, anchors and aliases
kept), merged line by line with the original so that lines ruamel lays out differently but the edit did not
touch keep their bytes. Every text is read back as `read_qna` reads it and must hold the leaf's data and be
valid, else the next way is used: ruamel's own text, then `dump_qna`'s.
"""

import yaml

from curation.taxonomy.qna import load_data, read_qna
from curation.taxonomy.roundtrip.data import same
from curation.taxonomy.roundtrip.document import edited
from curation.taxonomy.roundtrip.splice import Unsupported, spliced
from curation.taxonomy.serialize import dump_qna

__all__ = ["export_qna", "same"]


def export_qna(data: dict, original: str | None, path: str) -> str:
    """The text of the `qna.yaml` at `path` holding `data`, written as close to `original` as the data allows."""
    if original is None:
        return dump_qna(data)
    try:
        before = load_data(original)
    except yaml.YAMLError:
        return dump_qna(data)
    if same(before, data):
        return original
    try:
        text = spliced(original, before, data)
    except (Unsupported, yaml.YAMLError, LookupError, ValueError):
        pass
    else:
        if _holds(text, data, path):
            return text
    for candidate in edited(original, before, data):
        if _holds(candidate, data, path):
            return candidate
    return dump_qna(data)


def _holds(text: str, data: dict, path: str) -> bool:
    read = read_qna(text, path)
    return read.valid and same(read.data, data)
