"""Versioned prompt templates. A template file is `prompts/<name>.txt`:

    # version: 2
    [system]
    ...
    [user]
    ... $variables ...

Changing a prompt's text means raising its version, which every sample records.
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).with_name("prompts")
_HEADER = re.compile(r"^#\s*version:\s*(\d+)\s*$", re.M)


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    system: str
    user: str

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def messages(self, **values) -> list[dict]:
        values = {key: str(value) for key, value in values.items()}
        return [
            {"role": "system", "content": Template(self.system).substitute(values)},
            {"role": "user", "content": Template(self.user).substitute(values)},
        ]


@functools.cache
def load_prompt(name: str) -> Prompt:
    text = (PROMPT_DIR / f"{name}.txt").read_text(encoding="utf-8")
    header = _HEADER.search(text)
    if not header:
        raise ValueError(f"prompts/{name}.txt has no '# version: N' line")
    sections = re.split(r"^\[(system|user)\]\s*$", text[header.end() :], flags=re.M)
    parts = dict(zip(sections[1::2], (s.strip() for s in sections[2::2]), strict=True))
    return Prompt(name=name, version=int(header.group(1)), system=parts.get("system", ""), user=parts["user"])


def prompt_versions() -> dict[str, int]:
    return {path.stem: load_prompt(path.stem).version for path in sorted(PROMPT_DIR.glob("*.txt"))}
