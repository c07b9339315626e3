"""What every teacher is: the value types of a call, the client protocol, its errors and statistics."""

import contextvars
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
    """The form an answer must take, for a teacher that steers its own decoding (the local backend).

    A server is only sent the prompt, which states the format; a small local model does not follow it
    reliably, so the local backend starts its answer with `start` and, when the answer has no line
    `verdict` + one of `choices`, ends it with that line, choosing the value the model finds most likely.
    """

    start: str = ""
    verdict: str = ""
    choices: tuple[str, ...] = ()


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    finish_reason: str | None = None


class TeacherError(LabError):
    """The teacher failed; `retryable` when waiting and asking again may help (429, 5xx, timeouts).

    `kind` says what went wrong in a word a run's headline can state (see FAILURE_CAUSES)."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None, kind: str = "other"):
        super().__init__(message, field="teacher")
        self.retryable = retryable
        self.http_status = status
        self.kind = kind


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
    steers: bool  # whether `shape` changes what complete() answers

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
