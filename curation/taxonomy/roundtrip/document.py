"""The edits the line splicer cannot make, made by ruamel.yaml's round-trip mode and merged back line by line."""

import io
from difflib import SequenceMatcher

import yaml

from curation.taxonomy.qna import as_read
from curation.taxonomy.roundtrip.data import BOM, line_ending, lines_of, origins, same


def edited(original: str, before, data: dict):
    """Texts of the original with the edit applied, best first (a generator: the second is made only if asked)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError as RuamelError
    from ruamel.yaml.util import load_yaml_guess_indent

    body = original[1:] if original.startswith(BOM) else original
    body = as_read(body)
    try:
        _, indent, offset = load_yaml_guess_indent(body)
        rt = YAML(typ="rt")
        rt.preserve_quotes = True
        rt.width = 1 << 30
        rt.indent(mapping=2, sequence=indent or 2, offset=offset or 0)
        untouched = _dump(rt, rt.load(body))
        document = rt.load(body)
        edited = _dump(rt, _Patch(document).apply(document, before, data))
    except (RuamelError, LookupError, ValueError, TypeError, AttributeError):
        return
    yield _merged(untouched, original, edited)
    yield edited


def _dump(rt, document) -> str:
    stream = io.StringIO()
    rt.dump(document, stream)
    return stream.getvalue()


class _Patch:
    """Applies new data to a round-trip document in place, touching only nodes whose data changed."""

    def __init__(self, document):
        self.shared = _shared_nodes(document)

    def apply(self, node, old, new):
        from ruamel.yaml.comments import CommentedMap, CommentedSeq

        if same(old, new):
            return node
        if isinstance(node, CommentedMap) and isinstance(old, dict) and isinstance(new, dict):
            return self._mapping(self._own(node), old, new)
        if isinstance(node, CommentedSeq) and isinstance(old, list) and isinstance(new, list) and len(node) == len(old):
            return self._sequence(self._own(node), old, new)
        return _fresh(new, like=node)

    def _own(self, node):
        """The node itself, or a copy when an alias shares it with another place that must not change."""
        if id(node) not in self.shared:
            return node
        import copy

        twin = copy.deepcopy(node)
        twin.yaml_set_anchor(None)
        return twin

    def _mapping(self, node, old: dict, new: dict):
        for key in [key for key in node if key not in new]:
            del node[key]
        previous = None
        for key, value in new.items():
            if key in node and key in old:
                patched = self.apply(node[key], old[key], value)
                if patched is not node[key]:
                    node[key] = patched
            else:
                keys = list(node)
                node.insert(keys.index(previous) + 1 if previous in keys else 0, key, _fresh(value))
            previous = key
        return node

    def _sequence(self, node, old: list, new: list):
        """Items kept, moved, edited, added or removed: unchanged items keep their nodes (and comments)."""
        origin = origins(old, new)
        items = []
        for j, item in enumerate(new):
            i = origin[j]
            if i is None:
                items.append(_fresh(item))
            elif same(old[i], item):
                items.append(node[i])
            else:
                items.append(self.apply(node[i], old[i], item))
        comments = {j: node.ca.items[i] for j, i in enumerate(origin) if i is not None and i in node.ca.items}
        list.clear(node)
        list.extend(node, items)
        node.ca.items.clear()
        node.ca.items.update(comments)
        return node


def _shared_nodes(document) -> set[int]:
    """Ids of collections that appear at more than one place (anchored and aliased)."""
    seen, shared, stack = set(), set(), [document]
    while stack:
        node = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        stack.extend(node.values() if isinstance(node, dict) else node)
    return shared


def _fresh(value, like=None):
    """A new node for `value` in the style `dump_qna` writes, or in the quoting of the node it replaces."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import (
        DoubleQuotedScalarString,
        LiteralScalarString,
        SingleQuotedScalarString,
    )

    if isinstance(value, dict):
        return CommentedMap((key, _fresh(item)) for key, item in value.items())
    if isinstance(value, list):
        return CommentedSeq(_fresh(item) for item in value)
    if not isinstance(value, str):
        return value
    if "\n" in value:
        return LiteralScalarString(value)
    if isinstance(like, (SingleQuotedScalarString, DoubleQuotedScalarString)):
        return type(like)(value)
    # ruamel resolves plain scalars as YAML 1.2 does; the official parser (PyYAML) as 1.1, where `yes` or `0755`
    # are not strings. Quote where PyYAML itself would.
    if yaml.safe_dump(value, width=1 << 30)[:1] in ("'", '"'):
        return SingleQuotedScalarString(value)
    return value


def _merged(base: str, original: str, theirs: str) -> str:
    """A three-way merge of lines: the original's where the edit (theirs) left base as it was, else the edit's.

    Lines are matched with their line endings read as LF; the original's keep their own, the edit's get the
    original's usual one.
    """
    bom = BOM if original.startswith(BOM) else ""
    ending = line_ending(original)
    base_lines, ours, theirs_lines = lines_of(base), lines_of(original[len(bom) :]), lines_of(theirs)
    ours_keys = [as_read(line) for line in ours]
    out = [bom]
    at_base = at_ours = at_theirs = 0
    for start, end, ours_at, theirs_at in _sync_regions(base_lines, ours_keys, theirs_lines):
        if theirs_lines[at_theirs:theirs_at] == base_lines[at_base:start]:
            out += ours[at_ours:ours_at]
        else:
            out += [line.replace("\n", ending) for line in theirs_lines[at_theirs:theirs_at]]
        length = end - start
        out += ours[ours_at : ours_at + length]
        at_base, at_ours, at_theirs = end, ours_at + length, theirs_at + length
    return "".join(out)


def _sync_regions(base: list[str], ours: list[str], theirs: list[str]):
    """Runs of base lines unchanged in both ours and theirs: (base start, base end, ours start, theirs start),
    ending with the empty run at the end of all three."""
    to_ours = SequenceMatcher(None, base, ours, autojunk=False).get_matching_blocks()
    to_theirs = SequenceMatcher(None, base, theirs, autojunk=False).get_matching_blocks()
    i = j = 0
    while i < len(to_ours) and j < len(to_theirs):
        a_ours, b_ours, n_ours = to_ours[i]
        a_theirs, b_theirs, n_theirs = to_theirs[j]
        start = max(a_ours, a_theirs)
        end = min(a_ours + n_ours, a_theirs + n_theirs)
        if start < end:
            yield start, end, b_ours + start - a_ours, b_theirs + start - a_theirs
        if a_ours + n_ours < a_theirs + n_theirs:
            i += 1
        else:
            j += 1
    yield len(base), len(base), len(ours), len(theirs)
