"""A real `celery worker` process for tests that need one: started in its own process group, killed whole."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")


def worker_env(database_name: str, redis_url: str, **extra: str) -> dict:
    """The environment of a worker that shares the test's database and broker."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {
        **env,
        "DEBUG": "1",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database_name}",
        "REDIS_URL": redis_url,
        **extra,
    }


def wait_for(condition, *, timeout: float = 60, interval: float = 0.05, what: str, describe=lambda: "", worker=None):
    """Poll `condition` until it returns something true (returned), failing the test after `timeout` s with
    `describe()`, or the tail of `worker`'s log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    told = worker.tail(40) if worker is not None else describe()
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{told}")


class Worker:
    """`celery worker` in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        log: Path,
        env: dict,
        *,
        queues: str = "generation,default",
        concurrency: int = 4,
        beat: bool = False,
    ):
        """`beat`: the worker runs celery beat too (the periodic reaper), with its schedule file beside the log."""
        self.log = log
        self.handle = log.open("ab")
        self.process = subprocess.Popen(
            [
                str(CELERY),
                "-A",
                "labweb",
                "worker",
                "-Q",
                queues,
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
                "-n",
                f"{name}@%h",
                *(["-B", "--schedule", str(log.with_suffix(".beat"))] if beat else []),
            ],  # fmt: skip
            cwd=REPO,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the worker exited with {self.process.returncode}:\n{self.tail()}")
            if " ready." in self.log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        pytest.fail(f"the worker did not start within {timeout} s:\n{self.tail()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)
        self.handle.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def drop_queued(broker, queue: str) -> int:
    """Delete the messages waiting in `queue` (every priority's list of it), as a restart of a Redis that keeps
    nothing on disk loses them; return how many there were."""
    dropped = 0
    for key in broker.scan_iter(match=f"{queue}*"):
        if key.decode() == queue or key.decode().startswith(f"{queue}\x06"):
            dropped += broker.llen(key)
            broker.delete(key)
    return dropped


def reaper_rounds(worker: Worker) -> int:
    """How many times the periodic reaper has run on `worker` (a line of its log says each succeeded)."""
    lines = worker.log.read_text(errors="replace").splitlines()
    return sum("labweb.tasks.reap_expired[" in line and "succeeded" in line for line in lines)


def reaped(worker: Worker, times: int = 1):
    """Whether the periodic reaper has run `times` times on `worker`."""
    return lambda: reaper_rounds(worker) >= times
