"""What the trainer tells whoever follows it: one JSON object a line, appended to `events.jsonl` by rank 0.

The Celery task that launched torchrun reads the file as it grows; a person can `tail -f` it.
"""

import json
import time
from pathlib import Path

EVENTS = "events.jsonl"


class Events:
    def __init__(self, output_dir: str, *, enabled: bool):
        self.enabled = enabled
        self.path = Path(output_dir) / EVENTS
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        print(line, flush=True)


def read_events(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete lines from byte `offset` on, and the offset after them (a half-written last line waits)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    events = []
    for line in chunk[:end].splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"event": "log", "line": line.decode("utf-8", "replace")})
    return events, offset + end
