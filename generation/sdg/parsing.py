"""Reading the teacher's answers. Malformed output is reported, never guessed at."""

import re

from labweb.errors import LabError


class MalformedOutput(LabError):
    def __init__(self, message: str, *, stage: str, raw: str):
        super().__init__(message, field=stage)
        self.stage = stage
        self.raw = raw


def blocks(text: str, tag: str, *, truncated: bool = False) -> list[str]:
    """The texts between "[Tag]" and "[End]" lines. A last block cut off by the token limit is dropped."""
    pattern = re.compile(rf"\[{tag}\](.*?)(?=\[End\]|\[{tag}\]|\Z)(\[End\])?", re.S | re.I)
    found = []
    for match in pattern.finditer(text):
        body, closed = match.group(1).strip(), match.group(2)
        if not body:
            continue
        if not closed and truncated and match.end() == len(text):
            continue
        found.append(body)
    return found


def qa_blocks(text: str, *, truncated: bool = False) -> list[tuple[str, str]]:
    pairs = []
    for body in blocks(text, "Question", truncated=truncated):
        question, sep, answer = body.partition("[Answer]")
        if sep and question.strip() and answer.strip():
            pairs.append((question.strip(), answer.strip()))
    return pairs


_SCORE = re.compile(r"score\s*[:=]\s*\**\s*(\d+)", re.I)
_YES_NO = re.compile(r"answer\s*[:=]\s*\**\s*(yes|no)\b", re.I)


def score(text: str, *, stage: str, allowed: range) -> int:
    found = _SCORE.findall(text)
    if not found or int(found[-1]) not in allowed:
        raise MalformedOutput(
            f'The teacher\'s {stage} has no "Score: {allowed.start}..{allowed.stop - 1}" line.', stage=stage, raw=text
        )
    return int(found[-1])


def yes_no(text: str, *, stage: str) -> bool:
    found = _YES_NO.findall(text)
    if not found:
        raise MalformedOutput(
            f'The teacher\'s {stage} has no "Answer: YES" or "Answer: NO" line.', stage=stage, raw=text
        )
    return found[-1].lower() == "yes"


def rationale(text: str) -> str:
    return re.split(r"\n\s*(?:score|answer)\s*[:=]", text, flags=re.I)[0].strip()[:2000]
