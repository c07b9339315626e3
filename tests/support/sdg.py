"""Helpers for generation tests: an in-memory response cache, the demo leaves as pipeline specs, a dead port."""

import socket
from dataclasses import replace
from pathlib import Path

import yaml

from generation.sdg.pipelines import KNOWLEDGE, SKILLS, LeafSpec
from generation.sdg.teachers import Completion

DEMO = Path(__file__).resolve().parents[2] / "curation" / "demo" / "taxonomy"
HAIKU = "compositional_skills/writing/freeform/haiku"
MEETINGS = "compositional_skills/extraction/grounded/meeting_action_items"
ARITHMETIC = "foundational_skills/reasoning/arithmetic_word_problems"
MOONS = "knowledge/science/astronomy/solar_system_moons"
MOONS_DOCUMENT = DEMO / MOONS / "solar_system_moons.md"


class MemoryCache:
    """The response cache as `CachedTeacher` wants it: `lookup` and `store` coroutines, over a dict."""

    def __init__(self):
        self.entries: dict[str, Completion] = {}
        self.lookups = 0

    async def lookup(self, key: str) -> Completion | None:
        self.lookups += 1
        found = self.entries.get(key)
        return None if found is None else replace(found)

    async def store(self, key: str, completion: Completion) -> None:
        self.entries[key] = replace(completion)


def demo_leaf(path: str) -> LeafSpec:
    """A demo taxonomy leaf as the pipelines see it (the same fields `run_create` freezes into a work item)."""
    qna = yaml.safe_load((DEMO / path / "qna.yaml").read_text(encoding="utf-8"))
    return LeafSpec(
        path=path,
        kind=KNOWLEDGE if path.startswith("knowledge/") else SKILLS,
        seeds=qna["seed_examples"],
        task_description=qna.get("task_description") or "",
        domain=qna.get("domain") or "",
        document_outline=qna.get("document_outline") or "",
    )


def closed_port_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
