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

import io
import re
from collections.abc import Mapping
from difflib import SequenceMatcher

import yaml

from curation.taxonomy.qna import _json_key, as_read, compose, load_data, read_qna
from curation.taxonomy.serialize import dump_qna

# Past this many (added x removed) list items, edited items are paired by position instead of by likeness.
MAX_PAIRINGS = 10_000
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
BOM = "\ufeff"


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
        spliced = _spliced(original, before, data)
    except (_Unsupported, yaml.YAMLError, LookupError, ValueError):
        pass
    else:
        if _holds(spliced, data, path):
            return spliced
    for candidate in _edited(original, before, data):
        if _holds(candidate, data, path):
            return candidate
    return dump_qna(data)


def same(a, b) -> bool:
    """Equal as the data of a qna.yaml: 3 is 3.0 (so `version: 3.0` is not an edit), but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _holds(text: str, data: dict, path: str) -> bool:
    read = read_qna(text, path)
    return read.valid and same(read.data, data)


def _edited(original: str, before, data: dict):
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
        origin = _origins(old, new)
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


def _pair(added: list[int], left: list[int], old: list, new: list) -> list[tuple[int, int]]:
    """Edited items: each new item not found unchanged, with the removed old item it most resembles."""
    if not added or not left:
        return []
    if len(added) * len(left) > MAX_PAIRINGS:
        return list(zip(added, left, strict=False))
    pairs, free = [], list(left)
    for j in added:
        if not free:
            break
        best = max(free, key=lambda i: (_likeness(old[i], new[j]), -abs(i - j)))
        # An item sharing no field with any removed one is new (one was deleted, another added), not an edit.
        if _likeness(old[best], new[j]) or not isinstance(new[j], dict):
            pairs.append((j, best))
            free.remove(best)
    return pairs


def _likeness(a, b) -> int:
    if isinstance(a, dict) and isinstance(b, dict):
        return sum(1 for key in a if key in b and same(a[key], b[key]))
    return 0


def _key(item):
    try:
        return _json_key(item)
    except TypeError:
        return ("unhashable", id(item))


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


def _line_ending(text: str) -> str:
    crlf, lf = text.count("\r\n"), text.count("\n")
    return "\r\n" if crlf and crlf >= lf - crlf else "\n"


def _merged(base: str, original: str, theirs: str) -> str:
    """A three-way merge of lines: the original's where the edit (theirs) left base as it was, else the edit's.

    Lines are matched with their line endings read as LF; the original's keep their own, the edit's get the
    original's usual one.
    """
    bom = BOM if original.startswith(BOM) else ""
    ending = _line_ending(original)
    base_lines, ours, theirs_lines = _lines(base), _lines(original[len(bom) :]), _lines(theirs)
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


def _lines(text: str) -> list[str]:
    return _LINE.findall(text)


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


class _Unsupported(Exception):
    """An edit the line splicer does not make (aliased nodes, a list item's first key removed): ruamel makes it."""


class _Replace(Exception):
    """The value is rewritten whole, with its key: a scalar, a flow collection, a value of another type."""


def _spliced(original: str, before, data: dict) -> str:
    """The original's lines with only those of the edited nodes replaced, each rewritten as `dump_qna` would."""
    bom = BOM if original.startswith(BOM) else ""
    body = original[len(bom) :]
    raw = _lines(body)
    text = as_read(body)
    splice = _Splice(text.split("\n"), raw, _line_ending(original), compose(text))
    edits = splice.node(splice.root, before, data)
    return bom + "".join(splice.apply(edits, 0, len(raw)))


class _Splice:
    def __init__(self, lines: list[str], raw: list[str], ending: str, root: yaml.Node):
        self.lines, self.raw, self.ending, self.root = lines, raw, ending, root
        seen, self.shared, stack = set(), set(), [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                self.shared.add(id(node))
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                stack.extend(item for pair in node.value for item in pair)
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)

    def apply(self, edits: list[tuple[int, int, list[str]]], lo: int, hi: int) -> list[str]:
        """Lines lo..hi of the original with `edits` (start, end, new lines) inside them made."""
        out, at = [], lo
        for start, end, new in sorted(edits, key=lambda edit: edit[0]):
            if start < at:
                raise _Unsupported("overlapping edits")
            out += self.raw[at:start] + new
            at = end
        out += self.raw[at:hi]
        # A last line without its line break may now have lines after it.
        return [line if line.endswith(("\n", "\r")) else line + self.ending for line in out[:-1]] + out[-1:]

    def node(self, node: yaml.Node, old, new) -> list[tuple[int, int, list[str]]]:
        if same(old, new):
            return []
        if id(node) in self.shared:
            raise _Unsupported("an aliased node changed")
        if isinstance(node, yaml.MappingNode) and not node.flow_style and isinstance(old, dict):
            if isinstance(new, dict) and node.value:
                return self.mapping(node, old, new)
        if isinstance(node, yaml.SequenceNode) and not node.flow_style and isinstance(old, list):
            if isinstance(new, list) and node.value and new:
                return self.sequence(node, old, new)
        raise _Replace()

    def mapping(self, node: yaml.MappingNode, old: dict, new: dict):
        entries = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value not in old:
                raise _Unsupported("a key that is not a plain string")
            entries[key.value] = (key, value)
        edits = []
        first = node.value[0][0]
        for name, (key, value) in entries.items():
            start, end = key.start_mark.line, self.entry_end(key, value)
            prefix = self.lines[start][: key.start_mark.column]
            if name not in new:
                if prefix.strip():
                    raise _Unsupported("the first key of a list item removed")
                edits.append((start, end, []))
                continue
            try:
                if self.is_alias(key, value) and not same(old[name], new[name]):
                    raise _Replace()  # this place only names the anchored node: it may get its own value
                edits += self.node(value, old[name], new[name])
            except _Replace:
                edits.append((start, end, self.render({name: new[name]}, prefix, key.start_mark.column)))
        previous = None
        for name in new:
            if name in entries:
                previous = name
                continue
            column = first.start_mark.column
            if previous is None and not self.lines[first.start_mark.line][:column].strip():
                at = first.start_mark.line
            else:
                at = self.entry_end(*(entries[previous] if previous else node.value[0]))
            edits.append((at, at, self.render({name: new[name]}, " " * column, column)))
        return edits

    def sequence(self, node: yaml.SequenceNode, old: list, new: list):
        spans = []
        for item in node.value:
            line, column = item.start_mark.line, item.start_mark.column
            before = self.lines[line][:column]
            if not before.rstrip().endswith("-") or id(item) in self.shared:
                raise _Unsupported("a list item not on its dash's line")
            spans.append((line, self.last_line(item, line) + 1, len(before.rstrip()) - 1))
        origin = _origins(old, new)
        if origin == list(range(len(old))):
            return [edit for item, o, n in zip(node.value, old, new, strict=True) for edit in self.node(item, o, n)]
        # The lines between items: comments go with the item below them, blank lines stay where they were.
        gaps = [[]] + [self.raw[spans[k - 1][1] : spans[k][0]] for k in range(1, len(spans))]
        remarks = [any(line.lstrip().startswith("#") for line in gap) for gap in gaps]
        blank = next((gap for gap, remark in zip(gaps[1:], remarks[1:], strict=True) if not remark), [])
        dash = spans[0][2]
        out = []
        for j, item in enumerate(new):
            i = origin[j]
            if i is not None and remarks[i]:
                out += gaps[i]
            elif j > 0:
                out += gaps[j] if j < len(gaps) and not remarks[j] else blank
            if i is None:
                out += self.render([item], " " * dash, dash)
            else:
                start, end, _ = spans[i]
                edits = [] if same(old[i], item) else self.node(node.value[i], old[i], item)
                out += self.apply(edits, start, end)
        return [(spans[0][0], spans[-1][1], out)]

    def is_alias(self, key: yaml.Node, value: yaml.Node) -> bool:
        """Whether the value of this entry is an alias (the node it names was written, anchored, before it)."""
        return id(value) in self.shared and value.start_mark.index < key.start_mark.index

    def entry_end(self, key: yaml.Node, value: yaml.Node) -> int:
        """The line after a mapping entry's last."""
        if self.is_alias(key, value):
            return key.start_mark.line + 1
        return self.last_line(value, key.start_mark.line) + 1

    def last_line(self, node: yaml.Node, floor: int) -> int:
        """The last line holding any of `node` (not the blank lines a block scalar swallows after it)."""
        if isinstance(node, yaml.ScalarNode):
            end = node.end_mark
            if node.style is None and node.value == "":
                return floor
            line = end.line if end.column > 0 else end.line - 1
            header = self.lines[node.start_mark.line][node.start_mark.column :].split("#")[0]
            if node.style in ("|", ">") and "+" not in header:  # "|+" keeps its trailing blank lines
                while line > floor and not self.lines[line].strip():
                    line -= 1
            return max(line, floor)
        if node.flow_style or not node.value:
            return max(node.end_mark.line, floor)
        last = node.value[-1]
        return self.last_line(last[1] if isinstance(node, yaml.MappingNode) else last, floor)

    def render(self, value, prefix: str, column: int) -> list[str]:
        from curation.taxonomy.serialize import _Dumper

        text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 30, indent=2)
        lines = text.splitlines()
        indent = " " * column
        return [prefix + lines[0] + self.ending] + [(indent + line if line else "") + self.ending for line in lines[1:]]


def _origins(old: list, new: list) -> list[int | None]:
    """For each new item, the old item it was: the same, or (for edited ones) the removed one most like it."""
    by_value: dict = {}
    for index, item in enumerate(old):
        by_value.setdefault(_key(item), []).append(index)
    origin: list[int | None] = []
    for item in new:
        found = by_value.get(_key(item))
        origin.append(found.pop(0) if found else None)
    taken = set(origin)
    left = [i for i in range(len(old)) if i not in taken]
    added = [j for j, i in enumerate(origin) if i is None]
    for j, i in _pair(added, left, old, new):
        origin[j] = i
    return origin
