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
        print(_readable(event, fields), flush=True)  # the log is for people; the file is for programs


def _readable(event: str, fields: dict) -> str:
    if event == "step":
        return (
            f"step {fields['step']}/{fields['total_steps']} epoch {fields['epoch']} loss {fields['loss']:.4f} "
            f"lr {fields['learning_rate']:.3g} grad-norm {fields['grad_norm']:.3g} "
            f"{fields['tokens_per_second']:.0f} tokens/s {fields['memory_mb']:.0f} MB"
        )
    details = " ".join(f"{key}={value}" for key, value in fields.items() if key != "traceback")
    return f"[{event}] {details}" + (f"\n{fields['traceback']}" if "traceback" in fields else "")


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
