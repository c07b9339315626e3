"""What the operators' dashboard shows: every kind of job, registered by its app, and the state of the workers.

Each app that owns a kind of job (generation runs, dataset builds, training jobs, evaluation jobs) calls
`register_job_kind` in its AppConfig.ready(), as it registers its reaper with labweb.jobs; the dashboard lists
what is registered and never imports an app.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from labweb.jobs import ACTIVE, Job, Status


@dataclass(frozen=True)
class Progress:
    done: int = 0
    total: int = 0
    text: str = ""

    @property
    def percent(self) -> int:
        return min(100, int(100 * self.done / self.total)) if self.total else 0


@dataclass(frozen=True)
class JobKind:
    """A kind of job as the dashboard shows it.

    `progress(jobs)` answers for a page of jobs at once (a fixed number of queries, whatever their number);
    `cancel` and `retry` are the app's own services, called as `cancel(job=job, user=user)`; None where the kind
    has no such action.
    """

    name: str  # the URL slug: "generation", "training"
    label: str  # "Generation runs"
    model: type[Job]
    queue: str  # the Celery queue its work runs on
    url_name: str  # the job's page: a URL name whose one argument is the job's pk
    progress: Callable[[list[Job]], dict[int, Progress]] = field(default=lambda jobs: {})
    cancel: Callable[..., object] | None = None
    retry: Callable[..., object] | None = None
    related: tuple[str, ...] = ("created_by",)

    # Templates call what they are given, so they read these flags, never the services themselves.
    @property
    def can_cancel(self) -> bool:
        return self.cancel is not None

    @property
    def can_retry(self) -> bool:
        return self.retry is not None

    def active(self, limit: int) -> list[Job]:
        # Running first ("running" sorts after "queued"), then the queue in the order it will be taken.
        rows = self.model.objects.filter(status__in=ACTIVE).select_related(*self.related)
        return list(rows.order_by("-status", "created_at", "id")[:limit])

    def failures(self, limit: int) -> list[Job]:
        rows = self.model.objects.filter(status=Status.FAILED).select_related(*self.related)
        return list(rows.order_by("-finished_at", "-id")[:limit])


_KINDS: dict[str, JobKind] = {}


def register_job_kind(kind: JobKind) -> None:
    _KINDS[kind.name] = kind


def job_kinds() -> list[JobKind]:
    return list(_KINDS.values())


def job_kind(name: str) -> JobKind | None:
    return _KINDS.get(name)


def queues() -> list[str]:
    """Every queue some worker must consume: the default queue and those the task routes and job kinds name."""
    from django.conf import settings

    named = getattr(settings, "LABWEB_READY_QUEUES", None)
    if named:
        return sorted(named)
    found = {settings.CELERY_TASK_DEFAULT_QUEUE}
    found |= {route["queue"] for route in settings.CELERY_TASK_ROUTES.values() if "queue" in route}
    found |= {kind.queue for kind in _KINDS.values()}
    return sorted(found)
