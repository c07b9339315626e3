"""Findings about taxonomy files."""

from dataclasses import dataclass


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
