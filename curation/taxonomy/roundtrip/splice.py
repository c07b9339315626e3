"""The edit as line splices into the original text: only the lines of edited nodes change."""

import yaml

from curation.taxonomy.qna import as_read, compose
from curation.taxonomy.roundtrip.data import BOM, line_ending, lines_of, origins, same


class Unsupported(Exception):
    """An edit the line splicer does not make (aliased nodes, a list item's first key removed): ruamel makes it."""


class _Replace(Exception):
    """The value is rewritten whole, with its key: a scalar, a flow collection, a value of another type."""


def spliced(original: str, before, data: dict) -> str:
    """The original's lines with only those of the edited nodes replaced, each rewritten as `dump_qna` would."""
    bom = BOM if original.startswith(BOM) else ""
    body = original[len(bom) :]
    raw = lines_of(body)
    text = as_read(body)
    splice = _Splice(text.split("\n"), raw, line_ending(original), compose(text))
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
                raise Unsupported("overlapping edits")
            out += self.raw[at:start] + new
            at = end
        out += self.raw[at:hi]
        # A last line without its line break may now have lines after it.
        return [line if line.endswith(("\n", "\r")) else line + self.ending for line in out[:-1]] + out[-1:]

    def node(self, node: yaml.Node, old, new) -> list[tuple[int, int, list[str]]]:
        if same(old, new):
            return []
        if id(node) in self.shared:
            raise Unsupported("an aliased node changed")
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
                raise Unsupported("a key that is not a plain string")
            entries[key.value] = (key, value)
        edits = []
        first = node.value[0][0]
        for name, (key, value) in entries.items():
            start, end = key.start_mark.line, self.entry_end(key, value)
            prefix = self.lines[start][: key.start_mark.column]
            if name not in new:
                if prefix.strip():
                    raise Unsupported("the first key of a list item removed")
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
                raise Unsupported("a list item not on its dash's line")
            spans.append((line, self.last_line(item, line) + 1, len(before.rstrip()) - 1))
        origin = origins(old, new)
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
