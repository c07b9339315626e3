"""How many calls a teacher takes at once: slots on its endpoints (replicas), each with a limit of its own.

A `Budget` hands out slots. `ProcessBudget` counts them in this process; `RedisBudget` (teachers/shared.py)
counts them in Redis for every process and machine. Both queue waiting calls the same way: the run holding
the fewest slots goes first (so one run cannot starve another), inside a run the call with the most calls
waiting on its answer, then the earliest; a slot goes to the least loaded endpoint that is up.
"""

import abc
import asyncio
import contextvars
import heapq
import itertools
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from generation.sdg.teachers.base import call_depth

# Whose calls these are, for fairness between runs (the Django shell sets "run:<id>" around an item).
call_share: contextvars.ContextVar[str] = contextvars.ContextVar("labweb_call_share", default="")


@dataclass(frozen=True)
class Slot:
    endpoint: int  # index into the teacher's endpoints
    share: str


@dataclass(eq=False)
class _Waiter:
    share: str
    key: tuple[int, int]  # (-depth, arrival)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    slot: Slot | None = None  # set, under the budget's lock, when a slot is handed to it

    def __lt__(self, other: "_Waiter") -> bool:
        return self.key < other.key


class _Queue:
    """Waiting calls, a heap per share."""

    def __init__(self):
        self._heaps: dict[str, list[_Waiter]] = {}
        self._order = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._heaps)

    def push(self, share: str, loop, future) -> _Waiter:
        waiter = _Waiter(share, (-call_depth.get(), next(self._order)), loop, future)
        heapq.heappush(self._heaps.setdefault(share, []), waiter)
        return waiter

    def remove(self, waiter: _Waiter) -> bool:
        heap = self._heaps.get(waiter.share)
        if heap is None or waiter not in heap:
            return False
        heap.remove(waiter)
        heapq.heapify(heap)
        if not heap:
            del self._heaps[waiter.share]
        return True

    def counts(self) -> dict[str, int]:
        return {share: len(heap) for share, heap in self._heaps.items()}

    def fairest(self, held: dict[str, int]) -> str | None:
        """The waiting share holding the fewest slots; on a tie, the one whose first call came earliest."""
        if not self._heaps:
            return None
        return min(self._heaps, key=lambda share: (held.get(share, 0), self._heaps[share][0].key[1]))

    def pop(self, share: str) -> _Waiter | None:
        while heap := self._heaps.get(share):
            waiter = heapq.heappop(heap)
            if not heap:
                del self._heaps[share]
            if not waiter.loop.is_closed():
                return waiter
        return None


@dataclass
class Endpoint:
    limit: int
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0
    error: str = ""


@dataclass
class EndpointState:
    """What the teacher page shows of one endpoint."""

    limit: int
    in_flight: int = 0
    down_seconds: float = 0.0  # how long it stays out; 0 while up
    failures: int = 0
    error: str = ""
    known: bool = True  # False when the shared state could not be read


@dataclass
class Backoff:
    """How long a failing endpoint stays out before it is tried again."""

    base: float = 2.0
    max: float = 30.0

    def seconds(self, failures: int) -> float:
        return min(self.max, self.base * 2 ** max(0, failures - 1))


def least_loaded(limits: list[int], used: list[int], up: list[bool]) -> int | None:
    """The endpoint with a free slot and the smallest share of its limit in use; the endpoints that are down
    count only when every endpoint is (then the caller's own retries decide, as with a single endpoint)."""
    if not any(up):
        up = [True] * len(limits)
    best = None
    for index, limit in enumerate(limits):
        if up[index] and used[index] < limit and (best is None or used[index] * limits[best] < used[best] * limit):
            best = index
    return best


class Budget(abc.ABC):
    """Slots on a teacher's endpoints. `acquire` waits for one; `release` gives it back (from any thread)."""

    def __init__(self, limits: list[int]):
        self.limits = [max(1, int(limit)) for limit in limits]
        self._lock = threading.Lock()
        self._waiters = _Queue()

    def set_limits(self, limits: list[int]) -> None:
        with self._lock:
            self.limits = [max(1, int(limit)) for limit in limits]
            self._limits_changed()

    async def acquire(self, share: str | None = None) -> Slot:
        share = call_share.get() if share is None else share
        loop = asyncio.get_running_loop()
        with self._lock:
            slot = self._take_now(share)
            if slot is not None:
                return slot
            waiter = self._waiters.push(share, loop, loop.create_future())
            self._queued()
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if self._waiters.remove(waiter):
                    self._queued()
                    raise
            if waiter.slot is not None:  # handed to us as we were cancelled: give it on
                self.release(waiter.slot)
            raise
        return waiter.slot

    def _hand(self, waiter: _Waiter, slot: Slot) -> None:
        """Under the lock: the slot is the waiter's from now on, even before its loop wakes it."""
        waiter.slot = slot
        waiter.loop.call_soon_threadsafe(_wake, waiter.future)

    @abc.abstractmethod
    def release(self, slot: Slot) -> None:
        """Give the slot back, waking the next waiter with a claim on it."""

    def endpoint_failed(self, index: int, error: str) -> None:  # noqa: B027 - an optional hook: a budget with nothing to track keeps it
        """The endpoint failed a call (no connection, 5xx, timeout): take it out for a while."""

    def endpoint_ok(self, index: int) -> None:  # noqa: B027 - an optional hook: a budget with nothing to track keeps it
        """The endpoint answered."""

    @abc.abstractmethod
    def states(self) -> list[EndpointState]:
        """Each endpoint's calls in flight and whether it is out after failing."""

    def _take_now(self, share: str) -> Slot | None:
        return None

    def _queued(self) -> None:  # noqa: B027 - an optional hook: a budget with nothing to track keeps it
        pass

    def _limits_changed(self) -> None:  # noqa: B027 - an optional hook: a budget with nothing to track keeps it
        pass


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class ProcessBudget(Budget):
    """Slots counted in this process, shared by every event loop in it."""

    def __init__(self, limits: list[int], backoff: Backoff | None = None):
        super().__init__(limits)
        self.backoff = backoff or Backoff()
        self._endpoints = [Endpoint(limit) for limit in self.limits]
        self._held: dict[str, int] = defaultdict(int)

    def _free(self) -> int | None:
        now = time.monotonic()
        return least_loaded(
            self.limits, [e.in_flight for e in self._endpoints], [e.down_until <= now for e in self._endpoints]
        )

    def _grant(self, index: int, share: str) -> Slot:
        self._endpoints[index].in_flight += 1
        self._held[share] += 1
        return Slot(index, share)

    def _take_now(self, share: str) -> Slot | None:
        index = None if self._waiters else self._free()
        return None if index is None else self._grant(index, share)

    def _dispatch(self) -> None:
        while self._waiters and (index := self._free()) is not None:
            share = self._waiters.fairest(self._held)
            waiter = self._waiters.pop(share)
            if waiter is not None:
                self._hand(waiter, self._grant(index, share))

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._endpoints[slot.endpoint].in_flight -= 1
            self._held[slot.share] -= 1
            if not self._held[slot.share]:
                del self._held[slot.share]
            self._dispatch()

    def _limits_changed(self) -> None:
        for endpoint, limit in zip(self._endpoints, self.limits, strict=True):
            endpoint.limit = limit
        self._dispatch()

    def endpoint_failed(self, index: int, error: str) -> None:
        with self._lock:
            endpoint = self._endpoints[index]
            endpoint.failures += 1
            endpoint.error = error
            endpoint.down_until = time.monotonic() + self.backoff.seconds(endpoint.failures)

    def endpoint_ok(self, index: int) -> None:
        endpoint = self._endpoints[index]
        if endpoint.failures:
            with self._lock:
                endpoint.failures, endpoint.down_until, endpoint.error = 0, 0.0, ""
                self._dispatch()

    def states(self) -> list[EndpointState]:
        now = time.monotonic()
        with self._lock:
            return [
                EndpointState(e.limit, e.in_flight, max(0.0, e.down_until - now), e.failures, e.error)
                for e in self._endpoints
            ]


class ConcurrencyLimit:
    """One endpoint's slots as an async context manager (the local model's one slot at a time)."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.budget = ProcessBudget([self.limit])

    async def __aenter__(self):
        await self.budget.acquire(share="")
        return self

    async def __aexit__(self, *exc):
        self.budget.release(Slot(0, ""))


_BUDGETS: dict[str, ProcessBudget] = {}
_LIMITS: dict[str, ConcurrencyLimit] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_limit(key: str, limit: int) -> ConcurrencyLimit:
    with _REGISTRY_LOCK:
        found = _LIMITS.get(key)
        if found is None or found.limit != limit:
            found = _LIMITS[key] = ConcurrencyLimit(limit)
        return found


def process_budget(key: str, limits: list[int]) -> ProcessBudget:
    """The process's budget for `key` (a teacher's model and endpoints), made on first use."""
    with _REGISTRY_LOCK:
        found = _BUDGETS.get(key)
        if found is None or len(found.limits) != len(limits):
            found = _BUDGETS[key] = ProcessBudget(limits)
        elif found.limits != [max(1, int(limit)) for limit in limits]:
            found.set_limits(limits)
        return found
