"""Liveness and readiness: the database, Redis, and the Celery workers as their own inspection reports them.

Worker inspection is a broadcast that waits for replies, so it runs with a short timeout and its answer is cached
for a few seconds: a page or a load balancer polling every second costs one broadcast per cache period, and
neither ever waits longer than the timeout.
"""

import time
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from labweb import monitor

CACHE_KEY = "labweb:monitor:workers"


@dataclass(frozen=True)
class Task:
    name: str
    id: str
    args: str
    started: float | None  # epoch seconds, as the worker reports it

    @property
    def seconds(self) -> int | None:
        return int(time.time() - self.started) if self.started else None


@dataclass(frozen=True)
class Worker:
    name: str
    queues: tuple[str, ...]
    tasks: tuple[Task, ...] = ()


@dataclass(frozen=True)
class Workers:
    workers: tuple[Worker, ...] = ()
    error: str = ""
    asked_at: float = field(default_factory=time.time)

    def consumers(self, queue: str) -> list[str]:
        return [w.name for w in self.workers if queue in w.queues]


def database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - a check reports every failure, it never raises
        return _failure(error)
    return "ok"


def broker() -> str:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.LABWEB_MONITOR_TIMEOUT,
        socket_connect_timeout=settings.LABWEB_MONITOR_TIMEOUT,
    )
    try:
        client.ping()
    except Exception as error:  # noqa: BLE001
        return _failure(error)
    finally:
        client.close()
    return "ok"


def _failure(error: Exception) -> str:
    # The kind and the first line only: a readiness answer is public and must not spell out hosts or secrets.
    return f"error: {type(error).__name__}"


def workers(*, fresh: bool = False) -> Workers:
    """The workers online, their queues and the tasks they are running, cached LABWEB_MONITOR_CACHE_SECONDS."""
    if not fresh:
        cached = cache.get(CACHE_KEY)
        if cached is not None:
            return cached
    found = inspect() if broker() == "ok" else Workers(error="Redis does not answer, so no worker can be asked.")
    cache.set(CACHE_KEY, found, settings.LABWEB_MONITOR_CACHE_SECONDS)
    return found


def inspect() -> Workers:
    from labweb.celery import app

    timeout = settings.LABWEB_MONITOR_TIMEOUT
    try:
        # Every live worker answers within the timeout; the second broadcast stops at as many replies as the first.
        queues = app.control.inspect(timeout=timeout).active_queues() or {}
        active = app.control.inspect(timeout=timeout, limit=len(queues)).active() or {} if queues else {}
    except Exception as error:  # noqa: BLE001
        return Workers(error=f"Celery's inspection failed: {_failure(error)}")
    return Workers(
        tuple(
            Worker(
                name=name,
                queues=tuple(sorted(q["name"] for q in queues[name])),
                tasks=tuple(
                    Task(
                        name=task.get("name", ""),
                        id=task.get("id", ""),
                        args=str(task.get("args", ""))[:200],
                        started=task.get("time_start"),
                    )
                    for task in active.get(name) or ()
                ),
            )
            for name in sorted(queues)
        )
    )


def readiness() -> tuple[bool, dict]:
    """Ready: the database and Redis answer and every queue has at least one worker consuming it."""
    checks = {"database": database(), "redis": broker()}
    found = workers() if checks["redis"] == "ok" else Workers(error="Redis does not answer.")
    consumers = {queue: len(found.consumers(queue)) for queue in monitor.queues()}
    missing = [queue for queue, n in consumers.items() if not n]
    checks["workers"] = found.error or (f"error: no worker consumes {', '.join(missing)}" if missing else "ok")
    ready = all(value == "ok" for value in checks.values())
    return ready, {"status": "ok" if ready else "error", "checks": checks, "queues": consumers}
