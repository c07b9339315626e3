"""One event loop per process for all teacher calls, driven from blocking worker threads.

A Celery worker runs work items on many threads. If each thread ran its own event loop, every loop would
need its own HTTP client and connections, and dozens of loops would take turns on the GIL for each response.
Instead every item's coroutine runs on one loop in a background thread, where one client per teacher keeps
all calls in flight, and the worker thread that started the item stays blocked on it, doing the item's
blocking work (the database) whenever the coroutine asks for it. So an item uses exactly its worker
thread's database connection, as any other task does.
"""

import asyncio
import os
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process's background event loop, started on first use (and again in a forked child)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            _pid = os.getpid()
            threading.Thread(target=_loop.run_forever, name="labweb-teacher-loop", daemon=True).start()
        return _loop


class Bridge:
    """Runs one coroutine on the shared loop; `call` runs a blocking function back on the calling thread.

    `idle`, called on that thread whenever it has done every job handed over so far and goes back to waiting:
    where to give back what only the jobs need (a pooled database connection) while the coroutine waits on
    the teacher."""

    def __init__(self, idle: Callable[[], None] | None = None):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = idle

    async def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((fn, args, kwargs, loop, future))
        return await future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Block until `coro` ends on the shared loop, meanwhile doing the work it hands over with `call`."""
        done = asyncio.run_coroutine_threadsafe(coro, shared_loop())
        done.add_done_callback(lambda _: self._jobs.put(None))
        try:
            while (job := self._jobs.get()) is not None:
                fn, args, kwargs, loop, future = job
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine, which decides
                    loop.call_soon_threadsafe(_settle, future, None, error)
                else:
                    loop.call_soon_threadsafe(_settle, future, result, None)
                if self._idle is not None and self._jobs.empty():
                    self._idle()
        except BaseException:
            done.cancel()  # the worker thread is being stopped: stop the coroutine too
            raise
        return done.result()


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the awaiting coroutine was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
