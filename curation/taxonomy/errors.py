from dataclasses import dataclass


class LabError(Exception):
    """A user-facing error: what went wrong, and where (file, line, field) when known."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.line = line
        self.path = path

    def as_dict(self) -> dict:
        return {"message": self.message, "field": self.field, "line": self.line, "path": self.path}

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.path, self.line) if p is not None)
        field = f" [{self.field}]" if self.field else ""
        return f"{where}{field} {self.message}".strip() if where or field else self.message


class ConflictError(LabError):
    """The object changed since the caller read it."""

    status = 409


@dataclass(frozen=True)
class Problem:
    """One finding about one file. `level` is "error" (the file is rejected) or "warning"."""

    path: str
    message: str
    line: int | None = None
    field: str | None = None
    level: str = "error"

    def as_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "field": self.field, "message": self.message, "level": self.level}

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        field = f" [{self.field}]" if self.field else ""
        return f"{where}{field} {self.message}"
