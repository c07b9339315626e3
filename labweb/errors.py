"""The one user-facing error type of LabWeb. Imports no Django: the pure cores (taxonomy, SDG, trainer) raise it.

The API maps it to one JSON shape (`labweb.api`), HTML views to form errors (`labweb.web`).
"""


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
    """The object changed since the caller read it (or is in a state that refuses the action)."""

    status = 409


class PreconditionFailed(LabError):
    """The caller's If-Match no longer names the object's current version."""

    status = 412
