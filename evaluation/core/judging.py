"""Keeps a judge busy: judgements are submitted as answers arrive, and at most `window` are in flight or queued
at the judge's own concurrency limit, so the producer (the model under test) is held back before memory grows,
and the judge never waits for the next answer while there is one."""

import asyncio
from dataclasses import dataclass

from generation.sdg.teachers import Sampling, TeacherError

JUDGE_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=512, seed=0)
KEY_REFUSED = (401, 403)  # a server that refuses the key it was sent (or wants one): asking again cannot help


def key_refusal(*, who: str, endpoint: str, status: int, reason: str, has_key: bool) -> str:
    """What to say of a server that answered 401 or 403: which one, and that it refused the key it was sent, or
    the request sent without one."""
    refused = "refused the API key it was sent" if has_key else "refused the request, sent without an API key"
    return f"{who} at {endpoint} {refused} (HTTP {status}: {reason})."


@dataclass(frozen=True)
class Judged:
    key: object  # whatever the caller submitted it under
    text: str | None  # None when the judge failed
    error: str = ""
    failure: TeacherError | None = None


class JudgePool:
    def __init__(self, judge, *, window: int | None = None, sampling: Sampling = JUDGE_SAMPLING):
        self.judge = judge
        self.sampling = sampling
        self.window = window or max(4, 2 * int(getattr(judge, "max_concurrency", 1) or 1))
        self._room = asyncio.Semaphore(self.window)
        self._tasks: set[asyncio.Task] = set()
        self._done: list[Judged] = []
        self.failures = 0
        self.failures_in_row = 0  # failed calls since the last success: a judge that is down shows here first
        self.last_error = ""
        self.refused: TeacherError | None = None  # the first call the server refused for its key (KEY_REFUSED)
        self._busy = 0

    async def submit(self, key, messages: list[dict]) -> None:
        await self._room.acquire()
        self._busy += 1
        task = asyncio.ensure_future(self._one(key, messages))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, key, messages: list[dict]) -> None:
        try:
            completion = await self.judge.complete(messages, self.sampling)
        except TeacherError as error:
            self.failures += 1
            self.failures_in_row += 1
            self.last_error = error.message
            if self.refused is None and error.http_status in KEY_REFUSED:
                self.refused = error
            self._done.append(Judged(key, None, error.message, error))
        else:
            self.failures_in_row = 0
            self._done.append(Judged(key, completion.text))
        finally:
            self._busy -= 1
            self._room.release()

    def take(self) -> list[Judged]:
        """What was judged since the last take, for the caller to save."""
        out, self._done = self._done, []
        return out

    @property
    def in_flight(self) -> int:
        return self._busy

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
