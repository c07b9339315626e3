"""The review pages: the queue, the keyboard-first review screen, bulk decisions, progress and agreement.

Every action is a plain form or link; htmx makes a decision swap in the next sample without a page load.
"""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from labweb.errors import LabError
from labweb.roles import REVIEWER, any_role_required, has_role, reviewer_required
from labweb.web import error_status, is_partial
from review import selectors
from review.core import rules
from review.models import REASONS, BulkJob
from review.queue import SORTS, STATE_CHOICES, Queue, for_list, page
from review.services import bulk as bulk_services
from review.services.claims import queue_claim
from review.services.decisions import Gone, decision_undo, sample_decide

SCREEN = "review/screen.html"
QUEUE = "review/queue.html"


def _queue(request: HttpRequest) -> tuple[Queue, LabError | None]:
    try:
        return Queue.parse(request.GET), None
    except LabError as error:
        return Queue(), error


def _qs(queue: Queue, **extra) -> str:
    params = {**queue.as_params(), **extra}
    return "?" + urlencode(params) if params else ""


def screen_url(pk: int, queue: Queue) -> str:
    return reverse("review:screen", args=[pk]) + _qs(queue)


def _screen_context(request: HttpRequest, item, queue: Queue, *, error: LabError | None = None) -> dict:
    reviewer = request.user if has_role(request.user, REVIEWER) else None
    previous, following = selectors.neighbours(item, queue, reviewer=reviewer)
    upcoming = None
    if following is not None:
        upcoming = selectors.item_for_screen(following.pk)
    return {
        "queue": queue,
        "qs": _qs(queue),
        "item": item,
        "current": _panel(item),
        "upcoming": _panel(upcoming) if upcoming else None,
        "previous": previous,
        "following": following,
        "reasons": REASONS,
        "error": error,
        "can_decide": reviewer is not None,
    }


def _panel(item) -> dict:
    return {
        "item": item,
        "sample": item.sample,
        "seeds": selectors.seed_examples(item),
        "diff": selectors.item_diff(item),
        "question": item.question if item.question is not None else item.sample.question,
        "response": item.response if item.response is not None else item.sample.response,
        "decided": item.state != rules.PENDING,
    }


@require_GET
@any_role_required
def queue(request: HttpRequest) -> HttpResponse:
    """The queue as a table of keyset pages, with its filters, progress and the bulk form."""
    current, error = _queue(request)
    reviewer = request.user if has_role(request.user, REVIEWER) else None
    try:
        rows = page(
            for_list(current.queryset(reviewer=reviewer)),
            current.order,
            cursor=request.GET.get("cursor", ""),
        )
    except LabError as cursor_error:
        error, rows = cursor_error, page(current.queryset().none(), current.order)
    context = {
        "queue": current,
        "params": current.as_params(),
        "qs": _qs(current),
        "page": rows,
        "error": error,
        "sorts": [(name, label) for name, (label, _, _) in SORTS.items()],
        "states": STATE_CHOICES,
        "summary": selectors.progress(run=current.run, path=current.path)["total"],
        "can_decide": reviewer is not None,
    }
    template = f"{QUEUE}#results" if is_partial(request) else QUEUE
    return render(request, template, context, status=422 if error else 200)


@require_GET
@any_role_required
def screen(request: HttpRequest, pk: int) -> HttpResponse:
    item = selectors.item_for_screen(pk)
    if item is None:
        raise Http404(f"Sample {pk} is gone or was never opened for review.")
    current, error = _queue(request)
    context = _screen_context(request, item, current, error=error)
    if is_partial(request):
        return render(request, f"{SCREEN}#screen", context)
    return render(request, SCREEN, context)


def _moved_on(request: HttpRequest, item, queue: Queue, note: str) -> HttpResponse:
    """After a decision: the next sample of the queue (swapped in by htmx, or a redirect), or the queue's end."""
    _, following = selectors.neighbours(item, queue, reviewer=request.user)
    target = following or item
    if is_partial(request):
        context = _screen_context(request, selectors.item_for_screen(target.pk), queue)
        context["notice"] = note
        response = render(request, f"{SCREEN}#screen", context)
        response["HX-Push-Url"] = screen_url(target.pk, queue)
        return response
    messages.success(request, note)
    return redirect(screen_url(target.pk, queue)) if following else redirect(reverse("review:queue") + _qs(queue))


def _refused(request: HttpRequest, pk: int, queue: Queue, error: LabError) -> HttpResponse:
    item = selectors.item_for_screen(pk)
    status = 404 if isinstance(error, Gone) else error_status(error)
    if item is None:
        if is_partial(request):
            return render(request, "review/partials/gone.html", {"error": error, "qs": _qs(queue)}, status=status)
        messages.error(request, error.message)
        return redirect(reverse("review:queue") + _qs(queue))
    context = _screen_context(request, item, queue, error=error)
    if is_partial(request):
        return render(request, f"{SCREEN}#screen", context, status=status)
    return render(request, SCREEN, context, status=status)


def _version(raw: str) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


@require_POST
@reviewer_required
def decide(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve, reject (reason, note) or edit-and-approve; the form carries the version it was rendered with."""
    current, _ = _queue(request)
    data = request.POST
    try:
        item = sample_decide(
            sample_id=pk,
            reviewer=request.user,
            action=data.get("action", ""),
            expected_version=_version(data.get("version")),
            reason=data.get("reason", ""),
            note=data.get("note", ""),
            question=data.get("question"),
            response=data.get("response"),
        )
    except LabError as error:
        return _refused(request, pk, current, error)
    verb = {"approved": "Approved", "rejected": "Rejected", "edited": "Edited and approved"}.get(item.state, "Voted on")
    return _moved_on(request, item, current, f"{verb} sample {pk}.")


@require_POST
@reviewer_required
def undo(request: HttpRequest) -> HttpResponse:
    """Take back your last decision (a bulk one as a whole) and show that sample again."""
    current, _ = _queue(request)
    try:
        undone = decision_undo(reviewer=request.user, steps=1)
    except LabError as error:
        shown = _version(request.POST.get("current"))
        if shown and selectors.item_for_screen(shown):
            return _refused(request, shown, current, error)
        messages.error(request, error.message)
        return redirect(reverse("review:queue") + _qs(current))
    decision = undone[0]
    if decision.job_id:
        note = f"Bulk job {decision.job_id} is being undone as a whole."
        url = reverse("review:bulk_job", args=[decision.job_id])
        if is_partial(request):
            return HttpResponseClientRedirect(url)
        messages.success(request, note)
        return redirect(url)
    what = {rules.APPROVE: "approval", rules.REJECT: "rejection", rules.EDIT: "edit"}[decision.action]
    note = f"Took back your {what} of sample {decision.item_id}."
    if is_partial(request):
        context = _screen_context(request, selectors.item_for_screen(decision.item_id), current)
        context["notice"] = note
        response = render(request, f"{SCREEN}#screen", context)
        response["HX-Push-Url"] = screen_url(decision.item_id, current)
        return response
    messages.success(request, note)
    return redirect(screen_url(decision.item_id, current))


@require_POST
@reviewer_required
def claim(request: HttpRequest) -> HttpResponse:
    """Hold a batch of the queue and open the first of it."""
    current, error = _queue(request)
    if error is None:
        try:
            ids = queue_claim(reviewer=request.user, queue=current, size=_version(request.POST.get("size")) or 20)
        except LabError as refused:
            error = refused
    if error:
        messages.error(request, error.message)
        return redirect(reverse("review:queue") + _qs(current))
    messages.success(request, f"{len(ids)} sample{'s' if len(ids) != 1 else ''} held for you.")
    return redirect(screen_url(ids[0], current))


def _ids(values: list[str]) -> list[int]:
    return [int(v) for v in values if v.strip().isdigit()]


@require_GET
@reviewer_required
def bulk_confirm(request: HttpRequest) -> HttpResponse:
    """The confirmation, stating how many samples the bulk decision will take."""
    current, error = _queue(request)
    action = request.GET.get("action", rules.APPROVE)
    picked = _ids(request.GET.getlist("picked"))
    scope = request.GET.get("scope", "all")
    if scope == "all":
        selected, excluded = [], sorted(set(picked + _ids(request.GET.getlist("excluded"))))
    else:
        selected, excluded = sorted(set(picked + _ids(request.GET.getlist("selected")))), []
    count = ceiling = 0
    if error is None:
        try:
            if action not in (rules.APPROVE, rules.REJECT):
                raise LabError(f"A bulk decision approves or rejects, not {action!r}.", field="action")
            if scope != "all" and not selected:
                raise LabError("Select some samples first, or choose all that match.", field="selected")
            count, ceiling = bulk_services.bulk_preview(
                queue=current, selected=selected, excluded=excluded, reviewer=request.user
            )
        except LabError as refused:
            error = refused
    context = {
        "queue": current,
        "params": current.as_params(),
        "qs": _qs(current),
        "action": action,
        "scope": scope,
        "selected": selected,
        "excluded": excluded,
        "count": count,
        "ceiling": ceiling,
        "error": error,
        "reasons": REASONS,
    }
    return render(request, "review/bulk_confirm.html", context, status=422 if error else 200)


@require_POST
@reviewer_required
def bulk_start(request: HttpRequest) -> HttpResponse:
    current, error = _queue(request)
    data = request.POST
    if error is None:
        try:
            job = bulk_services.bulk_create(
                reviewer=request.user,
                action=data.get("action", ""),
                queue=current,
                selected=_ids(data.getlist("selected")),
                excluded=_ids(data.getlist("excluded")),
                expected=_version(data.get("expected")) or 0,
                ceiling=_version(data.get("ceiling")),
                reason=data.get("reason", ""),
                note=data.get("note", ""),
            )
        except LabError as refused:
            error = refused
    if error:
        messages.error(request, error.message)
        return redirect(reverse("review:queue") + _qs(current))
    messages.success(request, f"Bulk {job.action} of {job.expected} samples started.")
    return redirect(reverse("review:bulk_job", args=[job.pk]))


def _bulk_job_page(request: HttpRequest, pk: int, *, command_error: str = "") -> HttpResponse:
    job = get_object_or_404(BulkJob.objects.select_related("reviewer"), pk=pk)
    own = job.reviewer_id == request.user.pk
    failed = job.status == BulkJob.Status.FAILED
    undoable = bulk_services.undoable(job)
    reviewer = has_role(request.user, REVIEWER)
    context = {
        "job": job,
        "events": job.events.all()[: bulk_services.EVENTS_SHOWN],
        "queue_qs": _qs(Queue.from_params(job.filters)),
        "can_undo": own and undoable,
        "can_resume": failed and reviewer and bulk_services.may_act(job, request.user, "resume"),
        "can_cancel": job.status in BulkJob.CANCELLABLE
        and reviewer
        and bulk_services.may_act(job, request.user, "cancel"),
        "undo_failed": failed and not undoable,
        "command_error": command_error,
    }
    template = "review/bulk_job.html#job" if is_partial(request) else "review/bulk_job.html"
    return render(request, template, context, status=409 if command_error else 200)


@require_GET
@any_role_required
def bulk_job(request: HttpRequest, pk: int) -> HttpResponse:
    return _bulk_job_page(request, pk)


@require_POST
@reviewer_required
def bulk_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel from the job's page: htmx swaps the job's panel in place (with the refusal, if any), a plain form
    goes back to the page."""
    job = get_object_or_404(BulkJob, pk=pk)
    try:
        job = bulk_services.bulk_cancel(job=job, user=request.user)
    except LabError as error:
        if is_partial(request):
            return _bulk_job_page(request, pk, command_error=error.message)
        messages.error(request, error.message)
    else:
        if is_partial(request):
            return _bulk_job_page(request, pk)
        messages.success(request, f"Bulk job {job.pk} cancelled after {job.done} decisions; they stay decided.")
    return redirect(reverse("review:bulk_job", args=[pk]))


@require_POST
@reviewer_required
def bulk_undo(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BulkJob, pk=pk)
    try:
        bulk_services.bulk_undo(job=job, reviewer=request.user)
    except LabError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Undoing bulk job {job.pk} as a whole.")
    return redirect(reverse("review:bulk_job", args=[pk]))


@require_POST
@reviewer_required
def bulk_resume(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BulkJob, pk=pk)
    try:
        job = bulk_services.bulk_resume(job=job, user=request.user)
    except LabError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Bulk job {job.pk} resumed from where it stopped.")
    return redirect(reverse("review:bulk_job", args=[pk]))


@require_GET
@any_role_required
def progress(request: HttpRequest) -> HttpResponse:
    current, error = _queue(request)
    summary = selectors.progress(run=current.run, path=current.path)
    return render(
        request, "review/progress.html", {"queue": current, "summary": summary, "error": error, "qs": _qs(current)}
    )


@require_GET
@any_role_required
def agreement(request: HttpRequest) -> HttpResponse:
    current, error = _queue(request)
    result = selectors.agreement(run=current.run, path=current.path)
    return render(request, "review/agreement.html", {"queue": current, "result": result, "error": error})
