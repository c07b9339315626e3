"""Read and validate one `qna.yaml`, with the line and field of every problem.

Validation agrees with `instructlab.schema.taxonomy.TaxonomyParser(schema_version=0)`, the check that
`ilab taxonomy diff` runs: the official JSON schemas of the file's own `version`, and for version 2 and
later the error-level rules of yamllint's "relaxed" configuration. The yamllint rules are re-implemented
here because yamllint itself costs ~5 ms a file, more than everything else in an import together.
"""

import functools
import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml
from instructlab.schema import schema_base
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from curation.taxonomy.problems import Problem

KINDS = ("knowledge", "foundational_skills", "compositional_skills")
SCHEMA_FOLDERS = ("compositional_skills", "knowledge")
LATEST_VERSION = 3


@dataclass
class QnaFile:
    """A parsed `qna.yaml`: its data when it could be read, and every problem found."""

    path: str
    data: dict | None
    version: int = 0
    problems: list[Problem] = field(default_factory=list)

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
    loader = yaml.CSafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"Not valid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem:
            message = f"Not valid YAML: {exc.context}, {exc.problem}"
        return QnaFile(path, None, problems=[Problem(path, message, line=mark.line + 1 if mark else None)])
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
    return QnaFile(path, data, version, problems)


def validate_qna(data: dict, folder: str) -> list[Problem]:
    """Validate qna data held in memory (not yet a file) as the file `dump_qna` would write."""
    from curation.taxonomy.serialize import dump_qna

    return read_qna(dump_qna(data), f"{folder}/qna.yaml").problems


def content_hash(data: Mapping, documents: Mapping[str, str] | None = None, attribution: str = "") -> str:
    """A hash of what a leaf holds, independent of YAML formatting: used by diff and lineage."""
    payload = {"qna": data, "documents": dict(sorted((documents or {}).items())), "attribution": attribution}
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _document_version(data: Mapping) -> int:
    value = data.get("version", 1)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _lint(text: str, root: yaml.Node, path: str) -> list[Problem]:
    """The rules yamllint's "relaxed" configuration reports as errors (the rest are warnings)."""
    problems = []
    lines = text.split("\n")
    if len(lines) > 1 and lines[0].endswith("\r"):
        problems.append(Problem(path, "Wrong new line character: expected \\n (new-lines).", line=1))
    for number, line in enumerate(lines, 1):
        kept = line.rstrip(string.whitespace)
        if len(kept) != len(line) and line[len(kept)] in " \t":
            problems.append(Problem(path, "Trailing spaces (trailing-spaces).", line=number))
    if text and not text.endswith("\n"):
        problems.append(
            Problem(path, "No new line character at the end of file (new-line-at-end-of-file).", line=len(lines))
        )
    problems += _duplicate_keys(root, path)
    return problems


def _duplicate_keys(node: yaml.Node, path: str) -> list[Problem]:
    problems = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        problems.append(
                            Problem(
                                path,
                                f'Duplication of key "{key.value}" in mapping (key-duplicates).',
                                line=key.start_mark.line + 1,
                                field=key.value,
                            )
                        )
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return problems


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
    return resource.contents, validator_for(resource.contents)(resource.contents, registry=registry)


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
            missing = [key for key in error.validator_value if key not in error.instance]
            for key in missing:
                problems.append(
                    Problem(path, f'"{key}" is required.', line=_line(root, where), field=_field(where + [key]))
                )
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
