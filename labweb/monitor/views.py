"""The operators' dashboard (every kind of job, the workers, the checks, recent failures; cancel and retry) and
the health endpoints for load balancers and monitors."""

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from labweb import monitor
from labweb.errors import LabError
from labweb.jobs import ACTIVE, Status
from labweb.monitor import checks
from labweb.roles import operator_required
from labweb.web import is_partial

TEMPLATE = "labweb/dashboard.html"
ACTIVE_SHOWN = 10  # of each kind, running first; the kind's own list has the rest
FAILURES_SHOWN = 10


class Urls:
    """Each URL name reversed once a page, the pk put in after: reverse() costs about half a millisecond, and a
    page has up to a hundred row links."""

    PK = 2_147_483_647  # a pk no row has: the one part of the reversed URL that is replaced

    def __init__(self):
        self.templates: dict[tuple, str] = {}

    def __call__(self, name: str, *args, pk: int) -> str:
        key = (name, *args)
        if key not in self.templates:
            self.templates[key] = reverse(name, args=[*args, self.PK])
        return self.templates[key].replace(str(self.PK), str(pk))


def dashboard_context() -> dict:
    url = Urls()
    sections, failures = [], []
    for kind in monitor.job_kinds():
        counts = dict(
            kind.model.objects.filter(status__in=ACTIVE).values_list("status").annotate(n=Count("id")).order_by()
        )
        active = kind.active(ACTIVE_SHOWN)
        progress = kind.progress(active) if active else {}
        sections.append(
            {
                "kind": kind,
                "running": counts.get(Status.RUNNING, 0),
                "queued": counts.get(Status.QUEUED, 0),
                "rows": [
                    {
                        "job": job,
                        "url": url(kind.url_name, pk=job.pk),
                        "progress": progress.get(job.pk),
                        "cancel": url("monitor:cancel", kind.name, pk=job.pk) if kind.can_cancel else "",
                    }
                    for job in active
                ],
            }
        )
        failures += [
            {
                "kind": kind,
                "job": job,
                "url": url(kind.url_name, pk=job.pk),
                "retry": url("monitor:retry", kind.name, pk=job.pk) if kind.can_retry else "",
            }
            for job in kind.failures(FAILURES_SHOWN)
        ]
    failures.sort(key=lambda row: (row["job"].finished_at is not None, row["job"].finished_at), reverse=True)
    workers = checks.workers()
    queues = [{"name": queue, "workers": workers.consumers(queue)} for queue in monitor.queues()]
    return {
        "sections": sections,
        "failures": failures[:FAILURES_SHOWN],
        "workers": workers,
        "queues": queues,
        # The page has just read every kind of job: the database answered.
        "checks": {"database": "ok", "redis": checks.broker()},
    }


@require_GET
@operator_required
@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, f"{TEMPLATE}#live" if is_partial(request) else TEMPLATE, dashboard_context())


def _act(request: HttpRequest, kind_name: str, pk: int, action: str) -> HttpResponse:
    kind = monitor.job_kind(kind_name)
    service = getattr(kind, action, None) if kind else None
    if service is None:
        raise Http404(f"No job kind {kind_name!r} with a {action} action.")
    job = get_object_or_404(kind.model, pk=pk)
    try:
        service(job=job, user=request.user)
    except LabError as error:
        messages.error(request, f"{job}: {error.message}")
    else:
        messages.success(request, f"{job}: {'cancelled' if action == 'cancel' else 'started again'}.")
    if is_partial(request):
        return render(request, f"{TEMPLATE}#live", dashboard_context() | {"live_messages": True})
    return redirect("monitor:dashboard")


@require_POST
@operator_required
def job_cancel(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    return _act(request, kind, pk, "cancel")


@require_POST
@operator_required
def job_retry(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    return _act(request, kind, pk, "retry")


@login_not_required
@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: this process answers requests. Nothing outside it is asked, so a restart cannot fix what it
    reports (a database outage must not make a load balancer restart every web process)."""
    return JsonResponse({"status": "ok"})


@login_not_required
@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and Redis answer and every queue has a worker; 503 naming what is missing."""
    ready, body = checks.readiness()
    return JsonResponse(body, status=200 if ready else 503)
