"""What every teacher is: the value types of a call, the client protocol, its errors and statistics."""

import contextvars
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Protocol

from labweb.errors import LabError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None


@dataclass(frozen=True)
class Shape:
    """The form an answer must take, for a teacher that can be held to it.

    Prompts state the text format (`[Question]…[End]` blocks, a `Score: N` line); a teacher that does not follow
    it loses every candidate as malformed. So a teacher that can is held to the shape:
    - the local backend steers its own decoding: it starts the answer with `start` and, when a judge's answer
      has no line `verdict` + one of `choices`, supplies that line (`Completion.steered`);
    - a server that takes a JSON schema (`schema()`) is asked for one, and its JSON is written back in the text
      format (`render()`), so every answer is read the same way.
    A list answer has `parts`: the tags of each item ("Question", or "Question" and "Answer"). A verdict's
    `choices` run from the most rejecting to the most accepting.
    """

    start: str = ""
    verdict: str = ""
    choices: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()

    def schema(self) -> dict | None:
        """The JSON schema of a structured answer of this shape, or None when it has none."""
        if self.choices:
            values = [choice.strip() for choice in self.choices]
            if all(value.isdigit() for value in values):
                value_schema = {"type": "integer", "enum": [int(value) for value in values]}
            else:
                value_schema = {"type": "string", "enum": values}
            # The reasons first: a judge that writes why before it decides decides better.
            return _object({"reasons": {"type": "string"}, self._verdict_key: value_schema})
        if self.parts:
            if len(self.parts) == 1:
                item = {"type": "string"}
            else:
                item = _object({part.lower(): {"type": "string"} for part in self.parts})
            return _object({self._list_key: {"type": "array", "items": item}})
        return None

    def render(self, text: str) -> str | None:
        """A structured answer (JSON text) written in the text format its prompt asks for; None when it does not
        fit the schema (the caller then reads the answer as text)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if self.choices:
            value, reasons = data.get(self._verdict_key), data.get("reasons", "")
            if isinstance(value, bool) or str(value).strip() not in {c.strip() for c in self.choices}:
                return None
            reasons = reasons.strip() if isinstance(reasons, str) else ""
            return f"{reasons}\n{self.verdict} {str(value).strip()}".lstrip()
        if self.parts:
            items = data.get(self._list_key)
            if not isinstance(items, list):
                return None
            blocks = []
            for item in items:
                values = (
                    [item]
                    if len(self.parts) == 1
                    else [item.get(part.lower()) if isinstance(item, dict) else None for part in self.parts]
                )
                if all(isinstance(value, str) and value.strip() for value in values):
                    lines = [f"[{part}]\n{value.strip()}" for part, value in zip(self.parts, values, strict=True)]
                    blocks.append("\n".join([*lines, "[End]"]))
            return "\n".join(blocks)
        return None

    @property
    def _verdict_key(self) -> str:
        return self.verdict.rstrip(":").strip().lower() or "verdict"

    @property
    def _list_key(self) -> str:
        return f"{self.parts[0].lower()}s"


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    finish_reason: str | None = None
    steered: bool = False  # the verdict line is LabWeb's choice (Shape), not the teacher's own words


class TeacherError(LabError):
    """The teacher failed; `retryable` when waiting and asking again may help (429, 5xx, timeouts);
    `unreachable` when no answer came at all (no connection, or none within the timeout). `kind` says what went
    wrong in a word a run's headline can state (see FAILURE_CAUSES). An HTTP error answer also keeps the server's
    URL (`endpoint`) and its own reason, for a caller that words the failure its own way."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        unreachable: bool = False,
        kind: str = "other",
        endpoint: str = "",
        reason: str = "",
    ):
        super().__init__(message, field="teacher")
        self.retryable = retryable or unreachable
        self.http_status = status
        self.endpoint = endpoint
        self.reason = reason
        self.unreachable = unreachable
        self.kind = "unreachable" if unreachable and kind == "other" else kind


# Each kind of teacher failure, as the cause a run's headline states ("4 work items failed: <cause>").
FAILURE_CAUSES = {
    "unreachable": "the teacher was unreachable",
    "timeout": "the teacher did not answer in time",
    "refused": "the teacher refused the requests",
    "server": "the teacher's server kept failing",
    "bad_answer": "the teacher's answers could not be read",
    "load": "the teacher could not be loaded",
    "other": "see the log",
}


class TeacherClient(Protocol):
    """What the pipelines call: a teacher model behind a server or in this process."""

    model: str
    max_concurrency: int
    steers: bool  # whether `shape` changes what complete() answers (it is then part of the cache key)

    async def complete(
        self, messages: list[dict], sampling: Sampling, stats: "CallStats | None" = None, shape: Shape | None = None
    ) -> Completion: ...


@dataclass
class CallStats:
    """What a work item asked of its teacher. Every attempt that reached the teacher is a call, whatever its
    answer, so `calls` is what the server saw; `retries` are the attempts after a request's first; `errors`
    are the failed attempts (any status, and those that reached no server), counted by TeacherError.kind in
    `error_kinds`."""

    calls: int = 0
    cached: int = 0
    retries: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # time the teacher worked on our calls: inside a concurrency slot, not waiting for one
    # Answers identical to the answer of the same request with another seed, while sampling: a teacher that
    # ignores its sampling parameters (see CachedTeacher).
    same_answers: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "CallStats":
        """The counters an earlier attempt published, to go on from (a retried item counts every attempt)."""
        known = {f.name for f in fields(cls)}
        stats = cls(**{name: value for name, value in (data or {}).items() if name in known})
        stats.error_kinds = dict(stats.error_kinds or {})
        return stats

    def failed(self, error: "TeacherError") -> None:
        self.errors += 1
        self.error_kinds[error.kind] = self.error_kinds.get(error.kind, 0) + 1


# How many teacher calls depend on the answer of the call being made (set by the pipelines around each call).
call_depth: contextvars.ContextVar[int] = contextvars.ContextVar("labweb_call_depth", default=0)
