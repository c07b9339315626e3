"""The response cache every call goes through, keyed by (model, messages, sampling, seed).

A resumed run replays what it already paid for instead of asking again.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from generation.sdg.teachers.base import CallStats, Completion, Sampling, Shape, TeacherClient


def cache_key(model: str, messages: list[dict], sampling: Sampling, shape: Shape | None = None) -> str:
    request = {"model": model, "messages": messages, "sampling": asdict(sampling)}
    if shape is not None:
        request["shape"] = asdict(shape)
    payload = json.dumps(
        request,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class CachedTeacher:
    """A teacher with a content-addressed response cache and call statistics.

    `lookup(key)` returns a stored Completion or None; `store(key, completion)` keeps one. Both are
    coroutines so that the Django shell can put them on its own thread.
    """

    teacher: TeacherClient
    lookup: Callable
    store: Callable
    stats: CallStats = field(default_factory=CallStats)
    # (request but its seed) -> {seed: hash of the answer}: to notice a teacher that ignores sampling.
    _answers: dict = field(default_factory=dict, repr=False)

    @property
    def model(self) -> str:
        return self.teacher.model

    async def complete(self, messages: list[dict], sampling: Sampling, shape: Shape | None = None) -> Completion:
        # A shape is part of the request only for a teacher it steers; a server is sent the prompt alone.
        shape = shape if getattr(self.teacher, "steers", False) else None
        key = cache_key(self.teacher.model, messages, sampling, shape)
        found = await self.lookup(key)
        if found is not None:
            self.stats.cached += 1
            found.cached = True
            return found
        completion = await self.teacher.complete(messages, sampling, self.stats, shape=shape)  # counts its calls
        self._notice_ignored_sampling(messages, sampling, shape, completion.text)
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        await self.store(key, completion)
        return completion

    def _notice_ignored_sampling(self, messages: list[dict], sampling: Sampling, shape, text: str) -> None:
        """Count an answer that repeats, word for word, the answer to the same request with another seed.

        A unit asks a prompt again with a new seed when its first answer was not enough; a teacher that samples
        answers differently, one that ignores temperature and seed (a server that samples only when its model's
        own settings say so) answers the same, and every candidate of the later rounds is a duplicate."""
        if sampling.temperature <= 0 or sampling.seed is None or not text.strip():
            return
        seen = self._answers.setdefault(
            cache_key(self.teacher.model, messages, replace(sampling, seed=None), shape), {}
        )
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if sampling.seed not in seen and digest in seen.values():
            self.stats.same_answers += 1
        seen[sampling.seed] = digest
