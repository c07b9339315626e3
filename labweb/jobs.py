"""The lifecycle every kind of long job shares: generation runs, training jobs, evaluation jobs.

A job has a status that only moves by conditional UPDATE (the row count says who won), a log of events that
operators read, and units of work held under a lease that a live worker renews and a dead one lets lapse; the
periodic reaper calls each kind's registered `reap` to hand expired units back, and to send again a job whose
message no worker ever took (`resend_unclaimed`). Job state lives in our own tables, never in Celery's result
backend: operators watch jobs from the database.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from labweb.errors import ConflictError


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (Status.QUEUED, Status.RUNNING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
logger = logging.getLogger(__name__)


class Job(models.Model):
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    Status = Status
    # The statuses a job ends in (transition() stamps finished_at on them); a kind with more says so.
    FINISHED = FINISHED

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE


class Leased(models.Model):
    """A unit of work one worker holds at a time: who holds it and until when, and how often it was taken."""

    lease_owner = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class Sent(models.Model):
    """When a job's task was last sent, for the reaper to send it again should no worker take it
    (`resend_unclaimed`): the message may have been lost, and then nothing else ever would."""

    sent_at = models.DateTimeField(default=timezone.now, help_text="When its task was last sent")
    resends = models.PositiveSmallIntegerField(
        default=0, help_text="Times the reaper sent it again since, no worker having taken it"
    )

    class Meta:
        abstract = True


class Event(models.Model):
    """A line of a job's log: what started, finished or failed, with the error when it did."""

    class Level(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        ERROR = "error"

    level = models.CharField(max_length=16, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.message[:80]


def transition(job: Job, *, to: str, allowed: Iterable[str], refusal: str | None = None, **fields) -> bool:
    """Move `job` to status `to` if it is in one of `allowed`: one conditional UPDATE, the row count decides.

    With `refusal`, losing raises ConflictError naming the status it found; without, it returns False. `job` is
    refreshed either way, so the caller sees what won.
    """
    now = timezone.now()
    if to == Status.RUNNING:
        fields.setdefault("started_at", job.started_at or now)
    if to in type(job).FINISHED:
        fields.setdefault("finished_at", now)
    won = type(job).objects.filter(pk=job.pk, status__in=list(allowed)).update(status=to, **fields)
    job.refresh_from_db()
    if not won and refusal:
        raise ConflictError(refusal.format(status=job.status), field="status")
    return bool(won)


def lease_until(seconds: int | None = None):
    return timezone.now() + timezone.timedelta(seconds=seconds or settings.LABWEB_WORK_LEASE_SECONDS)


def worker_name() -> str:
    """Who holds a lease: this machine and process (a lease owner is this plus a token of the one claim)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_owner() -> str:
    return f"{worker_name()}/{os.urandom(6).hex()}"


# --- leases a live process keeps -----------------------------------------------------------------------------
# A unit's own loop renews its lease as it goes, but a unit may sit in something long that is not its loop
# (loading a model, one slow write). So every worker process also renews, on a thread of its own, the lease of
# each unit it holds: a lease then runs out only when its process is gone (or cannot reach the database), and
# leases can be short, which is what makes a dead worker's units come back within seconds.

_held: dict[tuple[type[models.Model], int, str], int] = {}
_held_lock = threading.Lock()
_keeper_pid: int | None = None


@contextmanager
def lease_kept(model: type[models.Model], pk: int, owner: str, seconds: int | None = None) -> Iterator[None]:
    """While inside, this process's lease keeper renews `owner`'s lease on the row (if it still holds one)."""
    key = (model, pk, owner)
    with _held_lock:
        _held[key] = seconds or settings.LABWEB_WORK_LEASE_SECONDS
    try:
        yield
    finally:
        with _held_lock:
            _held.pop(key, None)


def renew_held() -> int:
    """Renew every lease this process holds through `lease_kept`; return how many rows were renewed.

    A row whose owner changed (taken over) or whose lease was cleared (finished, handed back) is left alone.
    """
    with _held_lock:
        held = list(_held.items())
    groups: dict[tuple[type[models.Model], int], Q] = {}
    for (model, pk, owner), seconds in held:
        groups[(model, seconds)] = groups.get((model, seconds), Q()) | Q(pk=pk, lease_owner=owner)
    renewed = 0
    for (model, seconds), which in groups.items():
        renewed += model.objects.filter(which, lease_until__isnull=False).update(lease_until=lease_until(seconds))
    return renewed


def start_lease_keeper(interval: float | None = None) -> None:
    """Start this process's lease keeper (once per process; a forked child starts its own)."""
    global _keeper_pid
    with _held_lock:
        if _keeper_pid == os.getpid():
            return
        _keeper_pid = os.getpid()
    every = interval or settings.LABWEB_WORK_LEASE_SECONDS / 4
    logger.info("Renewing the leases this process holds every %g s", every)
    threading.Thread(target=_keep_leases, args=(every,), name="labweb-lease-keeper", daemon=True).start()


def _keep_leases(every: float) -> None:
    stop = threading.Event()
    while not stop.wait(every):
        try:
            close_old_connections()
            renew_held()
        except Exception:  # noqa: BLE001 - a database hiccup must not end the keeper; the next round tries again
            logger.exception("Renewing leases failed")
            connection.close()


def send_task(name: str, *args, countdown: float | None = None) -> None:
    """Queue the registered task `name` (eager under CELERY_TASK_ALWAYS_EAGER, as `.delay()` is).

    By name, so that a service need not import the tasks module that calls it.
    """
    from labweb.celery import app

    try:
        task = app.tasks[name]
    except KeyError:
        # Every app's tasks module is imported by its AppConfig.ready(): a miss is a misspelt name.
        raise LookupError(f"No Celery task is registered as {name!r}.") from None
    task.apply_async(args, countdown=countdown)


def send_task_on_commit(name: str, *args, countdown: float | None = None) -> None:
    """Queue `name` once the current transaction commits, so the task finds what the transaction wrote."""
    transaction.on_commit(lambda: send_task(name, *args, countdown=countdown))


def mark_sent(job: Sent) -> None:
    """Stamp the job as sent now: the clock of `resend_unclaimed`, which starts over with every deliberate send."""
    type(job).objects.filter(pk=job.pk).update(sent_at=timezone.now(), resends=0)


def job_send_on_commit(job: Sent, name: str, *args) -> None:
    """Queue the job's task `name` once the transaction commits, stamping the job as sent (`mark_sent`)."""
    mark_sent(job)
    send_task_on_commit(name, *args)


def resend_lapsed(active: models.QuerySet, resend: Callable[[models.Model], None]) -> int:
    """Take back each job of `active` whose worker stopped renewing its lease, and `resend(job)` (its event and
    its task, sent on commit) in the transaction that frees it. A lease renewed meanwhile, or a job that moved on,
    is left alone: the conditional UPDATE decides. For kinds whose whole job is one leased unit of work (and
    `Sent`: the hand-back counts as its send)."""
    count = 0
    for job in active.filter(lease_until__lt=timezone.now()).exclude(lease_owner=""):
        with transaction.atomic():
            if (
                type(job)
                .objects.filter(pk=job.pk, status=job.status, lease_owner=job.lease_owner)
                .update(lease_owner="", lease_until=None, sent_at=timezone.now(), resends=0)
            ):
                resend(job)
                count += 1
    return count


def resend_unclaimed(waiting: models.QuerySet, resend: Callable[[models.Model], None]) -> int:
    """Send again each job of `waiting` whose task went out LABWEB_QUEUED_RESEND_SECONDS ago and that no worker
    has taken since; return how many. `resend(job)` records the job's event (`resent_message`) and sends its task
    on commit, in the transaction of the conditional UPDATE that stamps the job: one taken meanwhile, or sent
    again by another reaper, is left alone.

    Redis keeps no message on disk, so a broker restart (or a flushed queue) loses every message no worker has
    taken, and without this such a job stays queued for good. Whether the message is lost or merely waits behind
    others in a busy queue cannot be told from here; each kind's claim makes a second message harmless (the worker
    finds the job taken or finished and drops it), and the wait doubles with each resend, so a job behind hours of
    work gets a handful of spare messages, not one per period. `waiting` is the caller's: its jobs that no worker
    holds (queued, no lease), with `Sent`'s fields.
    """
    now = timezone.now()
    grace = settings.LABWEB_QUEUED_RESEND_SECONDS
    count = 0
    for job in waiting.filter(sent_at__lt=now - timedelta(seconds=grace)):
        if job.sent_at > now - timedelta(seconds=grace * 2 ** min(job.resends, 10)):
            continue
        with transaction.atomic():
            if waiting.filter(pk=job.pk, sent_at=job.sent_at).update(sent_at=now, resends=F("resends") + 1):
                resend(job)
                count += 1
    return count


def reap_kind(
    active: models.QuerySet,
    *,
    warn: Callable[[models.Model, str], None],
    send: Callable[[models.Model], None],
    lapsed: str,
) -> int:
    """A kind's reaper when its whole job is one leased unit (`Leased` and `Sent`): each job of `active` whose
    lease lapsed is handed back, and each no worker took is sent again (`resend_unclaimed`); `warn(job, message)`
    logs why (`lapsed`, or `resent_message`), `send(job)` queues its task on commit."""

    def handed_back(job) -> None:
        warn(job, lapsed)
        send(job)

    def unclaimed(job) -> None:
        warn(job, resent_message(job))
        send(job)

    return resend_lapsed(active, handed_back) + resend_unclaimed(active.filter(lease_owner=""), unclaimed)


def broker_messages(queue: str) -> int | None:
    """How many messages wait in the broker's `queue` (not those a worker has taken); None when the broker cannot
    say. Under CELERY_TASK_ALWAYS_EAGER nothing is queued: 0."""
    from amqp.exceptions import ChannelError
    from kombu.exceptions import OperationalError as BrokerDown

    from labweb.celery import app

    if app.conf.task_always_eager:
        return 0
    try:
        with app.connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError as error:
        # A restarted Redis knows no queue until a worker declares it again: none wait in it.
        return 0 if str(error.reply_code) == "404" else None
    except (BrokerDown, OSError):  # a broker that is down says nothing either way
        return None


def resent_message(job: Sent) -> str:
    """The line a job's log gets when `resend_unclaimed` sends it again (`job` as it was read, before)."""
    waited = round((timezone.now() - job.sent_at).total_seconds())
    return (
        f"No worker took it in the {waited:,} s since it was sent (its message may have been lost, say with a "
        f"restart of the broker); sent again ({job.resends + 1} {'time' if not job.resends else 'times'})."
    )


_REAPERS: dict[str, Callable[[], int]] = {}


def register_reaper(name: str, reap: Callable[[], int]) -> None:
    """Each kind of job, in its AppConfig.ready(): `reap()` hands back what dead workers held; returns a count."""
    _REAPERS[name] = reap


def reap_all() -> dict[str, int]:
    return {name: reap() for name, reap in sorted(_REAPERS.items())}
