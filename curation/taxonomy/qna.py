"""Read and validate one `qna.yaml`, with the line and field of every problem.

Validation agrees with `instructlab.schema.taxonomy.TaxonomyParser(schema_version=0)`, the check that
`ilab taxonomy diff` runs: the official JSON schemas of the file's own `version`, and for version 2 and
later the error-level rules of yamllint's "relaxed" configuration. yamllint costs ~5 ms a file, more than
everything else in an import together, so a quick scan looks for what its error-level rules could report
and only the files it flags go through yamllint itself (in process), whose verdict then stands.

Before anything is built from the YAML, one pass over its parse events refuses documents nested deeper
than MAX_DEPTH (the C composer recurses and crashes the process on deep input), aliases that expand to
more than MAX_ALIAS_NODES nodes or MAX_ALIAS_CHARS characters ("billion laughs"), and aliases inside the
collection they name (the data would hold itself). Values LabWeb's database cannot hold (see `storage`)
are errors too, although the official parser accepts them.
"""

import functools
import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml
from instructlab.schema import schema_base
from jsonschema import ValidationError
from jsonschema.validators import extend, validator_for
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from curation.taxonomy.problems import Problem
from curation.taxonomy.storage import FIELD_MAX, unstorable_reason

KINDS = ("knowledge", "foundational_skills", "compositional_skills")
SCHEMA_FOLDERS = ("compositional_skills", "knowledge")
LATEST_VERSION = 3
MAX_DEPTH = 100
MAX_ALIAS_NODES = 100_000
# Aliases of a long text multiply characters, not nodes: what every later step (validation messages, hashing,
# the export's fallback writer) pays for is the expanded text.
MAX_ALIAS_CHARS = 2_000_000
# A file is reported by its first problems: one with a problem on every line would otherwise make a list as long
# as the file, in memory and in the import's record (every problem read_qna finds is an error).
MAX_FILE_PROBLEMS = 100
# What TaxonomyParser hands yamllint (instructlab.schema.taxonomy.DEFAULT_YAMLLINT_CONFIG).
YAMLLINT_CONFIG = "{extends: relaxed, rules: {line-length: disable}}"
# The official parser uses PyYAML's pure-Python loader. libyaml (10x faster) reads the same files the same way
# except around tabs, the rarer line breaks and control characters, and escapes of surrogates (libyaml refuses
# them, PyYAML makes them): files holding those take the slow one.
_LOADERS_DIFFER = re.compile("[\t\x7f-\x9f\u2028\u2029]|\\\\(u|U0000)[dD][89a-fA-F]")


@dataclass
class QnaFile:
    """A parsed `qna.yaml`: its data when it could be read, every problem found, and its text as read."""

    path: str
    data: dict | None
    version: int = 0
    problems: list[Problem] = field(default_factory=list)
    text: str | None = None  # the file decoded, line endings and BOM as they were

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def valid(self) -> bool:
        return self.data is not None and not self.errors


def folder_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def schema_name(folder: str, data: Mapping) -> str:
    # Like the official parser: the innermost folder named after a schema wins, else the content decides.
    for part in reversed(folder.split("/")):
        if part in SCHEMA_FOLDERS:
            return part
    return "knowledge" if "document" in data else "compositional_skills"


def leaf_kind(folder: str, data: Mapping) -> str:
    top = folder.split("/", 1)[0]
    return top if top in KINDS else schema_name(folder, data)


def read_qna(raw: str | bytes, path: str) -> QnaFile:
    """Parse and validate the text of the `qna.yaml` at `path` (relative to the taxonomy root)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            return QnaFile(path, None, problems=[Problem(path, "The file is not UTF-8 text.", line=line)])
    else:
        text = raw
    original = text
    text = as_read(text)
    shape = _shape_problem(text, path)
    if shape is not None:
        return QnaFile(path, None, problems=[shape])
    try:
        loader = _loader(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        return QnaFile(path, None, problems=[Problem(path, f"Not valid YAML: {exc.reason}.", line=line)])
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        return QnaFile(path, None, problems=[_yaml_problem(exc, path)])
    except yaml.YAMLError as exc:
        return QnaFile(path, None, problems=[Problem(path, f"Not valid YAML: {exc}")])
    finally:
        loader.dispose()
    if data is None or data == "":
        return QnaFile(path, None, problems=[Problem(path, "The file is empty.", line=1)])
    if not isinstance(data, dict):
        return QnaFile(
            path, None, problems=[Problem(path, "The top-level element is not a mapping of keys to values.", line=1)]
        )

    version = _document_version(data)
    problems: list[Problem] = []
    if version > 1:
        problems += _lint(text, node, path)
    problems += _schema_problems(data, version, folder_of(path), path, node)
    problems += _storage_problems(data, path, node)
    return QnaFile(path, data, version, _first_problems(problems, path), original)


def as_read(text: str) -> str:
    """The text as the official parser reads it: in text mode, so CRLF and CR line endings arrive as LF."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def load_data(text: str):
    """The data of a YAML text that `read_qna` has accepted, read as it reads it (without validating again)."""
    loader = _loader(as_read(text))
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def compose(text: str) -> yaml.Node | None:
    """The node tree of a YAML text (LF line endings), with the marks of where each node is in it."""
    loader = _loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _loader(text: str) -> yaml.SafeLoader:
    return yaml.SafeLoader(text) if _LOADERS_DIFFER.search(text) else yaml.CSafeLoader(text)


def validate_qna(data: dict, folder: str) -> list[Problem]:
    """Validate qna data held in memory (not yet a file) as the file `dump_qna` would write."""
    from curation.taxonomy.serialize import dump_qna

    return read_qna(dump_qna(data), f"{folder}/qna.yaml").problems


def content_hash(data: Mapping, documents: Mapping[str, str] | None = None, attribution: str = "") -> str:
    """A hash of what a leaf holds, independent of YAML formatting: used by diff and lineage."""
    payload = {"qna": _numbers_as_read(data), "documents": dict(sorted((documents or {}).items()))}
    payload["attribution"] = attribution
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _numbers_as_read(value):
    """`value` with whole floats as ints: `version: 3.0` is version 3 and a leaf keeps it as 3, so an edit and its
    revert must hash as the import did (3 is 3.0 to the round trip's `same` as well)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _numbers_as_read(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_as_read(item) for item in value]
    return value


def _document_version(data: Mapping) -> int:
    """The schema version the file asks for, read as the official parser reads it; -1 where that names no schema
    (it looks for `vTrue/`; `int(.inf)` raises), so that the file is refused as it refuses it."""
    value = data.get("version", 1)
    if isinstance(value, bool):
        return -1
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except OverflowError:
        return -1
    except (TypeError, ValueError):
        return 1


def _shape_problem(text: str, path: str) -> Problem | None:
    """Depth and alias expansion, from the parse events alone (neither parser recurses to make them)."""
    try:
        return _shape_of(yaml.CSafeLoader(text), path)
    except yaml.YAMLError:
        if not _LOADERS_DIFFER.search(text):
            return None  # the parse proper reports it, with its line
    # libyaml stopped at something the pure loader (which the parse proper then uses) reads: scan with that one.
    try:
        return _shape_of(yaml.SafeLoader(text), path)
    except yaml.YAMLError:
        return None


def _shape_of(loader, path: str) -> Problem | None:
    # What each anchor expands to, in nodes and characters; None while its own collection is still open.
    anchored: dict[str, tuple[int, int] | None] = {}
    open_at: list[tuple[str | None, int, int]] = []
    nodes = chars = written_nodes = written_chars = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.CollectionStartEvent):
                open_at.append((event.anchor, nodes, chars))
                if event.anchor is not None:
                    anchored[event.anchor] = None
                nodes += 1
                written_nodes += 1
                if len(open_at) > MAX_DEPTH:
                    return Problem(
                        path,
                        f"The YAML is nested more than {MAX_DEPTH} levels deep; LabWeb refuses it before parsing.",
                        line=line,
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, began_nodes, began_chars = open_at.pop()
                if anchor is not None:
                    anchored[anchor] = (nodes - began_nodes, chars - began_chars)
            elif isinstance(event, yaml.ScalarEvent):
                nodes += 1
                chars += len(event.value)
                written_nodes += 1
                written_chars += len(event.value)
                if event.anchor is not None:
                    anchored[event.anchor] = (1, len(event.value))
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor in anchored and anchored[event.anchor] is None:
                    return Problem(
                        path,
                        f"The alias *{event.anchor} stands inside the collection it names (a recursive alias); "
                        "LabWeb refuses it.",
                        line=line,
                    )
                alias_nodes, alias_chars = anchored.get(event.anchor) or (1, 0)
                nodes += alias_nodes
                chars += alias_chars
                written_nodes += 1
                if nodes - written_nodes > MAX_ALIAS_NODES or chars - written_chars > MAX_ALIAS_CHARS:
                    return Problem(
                        path,
                        f"YAML aliases here expand the document by more than {MAX_ALIAS_NODES:,} nodes or "
                        f'{MAX_ALIAS_CHARS:,} characters (a "billion laughs" file?); LabWeb refuses it.',
                        line=line,
                    )
    finally:
        loader.dispose()
    return None


def _yaml_problem(exc: yaml.MarkedYAMLError, path: str) -> Problem:
    message = f"Not valid YAML: {exc.problem or exc.context}"
    if exc.context and exc.problem:
        message = f"Not valid YAML: {exc.context}, {exc.problem}"
    mark = exc.problem_mark or exc.context_mark
    # An unclosed quote or bracket is found only at the end of the file; where it opened is the line to fix.
    if exc.context_mark is not None and "end of stream" in (exc.problem or ""):
        mark = exc.context_mark
    return Problem(path, message, line=mark.line + 1 if mark else None)


def _lint(text: str, root: yaml.Node, path: str) -> list[Problem]:
    """The error-level findings of yamllint's "relaxed" configuration, as TaxonomyParser runs it."""
    if _may_fail_lint(text, root):
        return _yamllint(text, path)
    return []


def _may_fail_lint(text: str, root: yaml.Node) -> bool:
    """Whether yamllint could report an error; never false where it would (it may be true where it would not).

    Its error-level rules that parsing has not already settled: trailing-spaces, new-line-at-end-of-file,
    new-lines (no CR is left, see read_qna) and key-duplicates.
    """
    if text and not text.endswith("\n"):
        return True
    for line in text.split("\n"):
        kept = line.rstrip(string.whitespace)
        if len(kept) != len(line) and line[len(kept)] in " \t":
            return True
    return _has_duplicate_keys(root)


_DISABLE_FILE = re.compile(r"^#\s*yamllint disable-file\s*$")  # as yamllint.linter reads the first line


@functools.cache
def _yamllint_config():
    from yamllint.config import YamlLintConfig

    return YamlLintConfig(YAMLLINT_CONFIG)


def _yamllint(text: str, path: str) -> list[Problem]:
    from yamllint import linter

    # linter.run first parses the whole file again (pure Python, every event kept in a list: 24 s and 350 MiB for
    # a 2 MiB file) only to report a syntax error, and this file has parsed. Its rules, and its directives, are the
    # cosmetic pass; what run adds besides is `disable-file` on the first line.
    if _DISABLE_FILE.match(text.split("\n", 1)[0]):
        return []
    problems = []
    for found in linter.get_cosmetic_problems(text, _yamllint_config(), None):
        if found.level != "error":
            continue
        desc = found.desc[:1].upper() + found.desc[1:]
        message = f"{desc} ({found.rule})." if found.rule else f"{desc}."
        problems.append(Problem(path, message, line=found.line))
        if len(problems) > MAX_FILE_PROBLEMS:
            break  # yamllint goes line by line: the rest of the file is not linted
    return problems


def _first_problems(problems: list[Problem], path: str) -> list[Problem]:
    if len(problems) <= MAX_FILE_PROBLEMS:
        return problems
    more = Problem(path, f"More problems follow in this file; LabWeb lists the first {MAX_FILE_PROBLEMS}.")
    return [*problems[:MAX_FILE_PROBLEMS], more]


def _has_duplicate_keys(node: yaml.Node) -> bool:
    stack, visited = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys = [key.value for key, _ in current.value if isinstance(key, yaml.ScalarNode)]
            if len(keys) != len(set(keys)):
                return True
            stack.extend(value for _, value in current.value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return False


@functools.cache
def _schema_resource(relative: str) -> Resource:
    try:
        contents = json.loads(schema_base().joinpath(relative).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NoSuchResource(relative) from exc
    return Resource.from_contents(contents, default_specification=DRAFT202012)


@functools.cache
def _validator(version: int, name: str):
    resource = _schema_resource(f"v{version}/{name}.json")
    registry = Registry(retrieve=lambda uri: _schema_resource(f"v{version}/{uri}"))
    cls = extend(validator_for(resource.contents), {"uniqueItems": _unique_items})
    return resource.contents, cls(resource.contents, registry=registry)


def _unique_items(validator, unique, instance, schema):
    # jsonschema compares lists of mappings pairwise: 10,000 seed examples took minutes.
    if not unique or not validator.is_type(instance, "array"):
        return
    seen = set()
    for item in instance:
        try:
            key = _json_key(item)
        except TypeError:
            seen = None
            break
        if key in seen:
            yield ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(key)
    if seen is None:
        from jsonschema._keywords import uniqueItems

        yield from uniqueItems(validator, unique, instance, schema)


def _json_key(value):
    """A hashable stand-in equal for equal JSON values (true is not 1; 1 is 1.0), as jsonschema's equality."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_json_key(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _json_key(item)) for key, item in value.items()))
    hash(value)
    return ("other", value)


def _schema_problems(data: dict, version: int, folder: str, path: str, root: yaml.Node) -> list[Problem]:
    name = schema_name(folder, data)
    try:
        schema, validator = _validator(version, name)
    except NoSuchResource:
        return [
            Problem(
                path,
                f"Unknown schema version {data.get('version')!r}: LabWeb knows versions 1 to "
                f"{LATEST_VERSION} of the InstructLab {name} schema.",
                line=_line(root, ["version"]),
                field="version",
            )
        ]
    if schema.get("deprecated"):
        message = schema.get("description") or f"{name} schema version {version} is deprecated."
        return [Problem(path, message, line=_line(root, ["version"]), field="version")]

    problems = []
    for error in validator.iter_errors(data):
        where = list(error.absolute_path)
        message = error.message
        if error.validator == "required":
            # jsonschema reports each missing key as an error of its own, each naming the whole list.
            missing = [key for key in error.validator_value if key not in error.instance]
            for key in missing:
                problem = Problem(path, f'"{key}" is required.', line=_line(root, where), field=_field(where + [key]))
                if problem not in problems:
                    problems.append(problem)
            continue
        if error.validator == "unevaluatedProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {})) | {"version"}
            for key in [k for k in error.instance if k not in allowed]:
                problems.append(
                    Problem(
                        path,
                        f'"{key}" is not allowed here.',
                        line=_line(root, where + [key]),
                        field=_field(where + [key]),
                    )
                )
            continue
        if error.validator == "minItems":
            message = f"Needs at least {error.validator_value} items; it has {len(error.instance)}."
        elif error.validator == "minLength" and error.validator_value == 1:
            message = "Must not be empty."
        elif error.validator == "uniqueItems":
            message = "Items must be unique; this list repeats an item."
        elif error.validator == "type":
            message = f"Must be of type {error.validator_value}, not {_type_name(error.instance)}."
        elif error.validator == "const":
            message = f"Must be {error.validator_value!r}, not {error.instance!r}."
        problems.append(Problem(path, message[-300:], line=_line(root, where), field=_field(where)))
    problems.sort(key=lambda p: (p.line or 0, p.field or ""))
    return problems


def _storage_problems(data: dict, path: str, root: yaml.Node) -> list[Problem]:
    """What the official parser accepts but LabWeb's columns cannot hold."""
    problems = []
    for name, limit in FIELD_MAX.items():
        value = data
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and len(value) > limit:
            parts = name.split(".")
            problems.append(
                Problem(
                    path,
                    f"Is {len(value):,} characters long; LabWeb stores at most {limit:,} here.",
                    line=_line(root, parts),
                    field=name,
                )
            )
    stack: list[tuple[list, object]] = [([], data)]
    while stack:
        where, value = stack.pop()
        texts = []
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, dict):
            texts = [key for key in value if isinstance(key, str)]
            stack.extend((where + [key], item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((where + [index], item) for index, item in enumerate(value))
        for text in texts:
            reason = unstorable_reason(text)
            if reason:
                problems.append(
                    Problem(path, f"The text {reason}.", line=_line(root, where), field=_field(where) or None)
                )
                break
    problems.sort(key=lambda p: (p.line or 0, p.field or ""))
    return problems


def _type_name(value) -> str:
    if value is None:
        return "empty (null)"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


def _field(parts: list) -> str | None:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _line(node: yaml.Node | None, parts: list) -> int | None:
    """The 1-based line of the value at `parts`, or of its nearest ancestor that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
