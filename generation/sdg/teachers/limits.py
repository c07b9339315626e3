"""How many calls a teacher takes at once, shared by every event loop of the process."""

import asyncio
import heapq
import itertools
import threading

from generation.sdg.teachers.base import call_depth


class ConcurrencyLimit:
    """A limit on calls in flight shared by every event loop in the process.

    Work items share one loop (generation.sdg.loop), but a teacher may also be driven from other loops
    (asyncio.run in a script or a test), and the limit must hold across all of them."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self._lock = threading.Lock()
        self._in_flight = 0
        self._order = itertools.count()
        # A heap of (-depth, arrival, loop, future): the call with the most calls waiting on its answer goes
        # first, then the earliest. A run's last items then finish together instead of one long chain
        # leaving slots idle at its end.
        self._waiters: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future]] = []

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_flight < self.limit and not self._waiters:
                self._in_flight += 1
                return self
            future = loop.create_future()
            entry = (-call_depth.get(), next(self._order), loop, future)
            heapq.heappush(self._waiters, entry)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                    raise
            await self.__aexit__(None, None, None)  # the slot was already handed to us: give it on
            raise
        return self

    async def __aexit__(self, *exc):
        with self._lock:
            while self._waiters:
                _, _, loop, future = heapq.heappop(self._waiters)
                if not loop.is_closed():
                    # The slot passes straight to the waiter (_in_flight stays the same); a waiter cancelled
                    # meanwhile finds itself off the list and passes the slot on in its turn.
                    loop.call_soon_threadsafe(_wake, future)
                    return
            self._in_flight -= 1


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


_LIMITS: dict[str, ConcurrencyLimit] = {}
_LIMITS_LOCK = threading.Lock()


def shared_limit(key: str, limit: int) -> ConcurrencyLimit:
    with _LIMITS_LOCK:
        found = _LIMITS.get(key)
        if found is None or found.limit != limit:
            found = _LIMITS[key] = ConcurrencyLimit(limit)
        return found
