"""What every HTML view shares: htmx partial responses, and service refusals shown as form errors."""

from collections.abc import Callable
from typing import TypeVar

from django.contrib import messages
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string

from labweb.errors import LabError

T = TypeVar("T")


def is_partial(request: HttpRequest) -> bool:
    """An htmx request wants a fragment; a history restore (reload after hx-push-url) wants the page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request


def render_fragments(
    request: HttpRequest, template: str, names: list[str], context: dict, *, oob: dict | None = None, status: int = 200
) -> HttpResponse:
    """Several partials of one template in one response: the swapped one first, out-of-band ones after.

    `oob` is merged into the context of every partial but the first (for templates that mark themselves
    `hx-swap-oob` only when asked).
    """
    html = "".join(
        render_to_string(f"{template}#{name}", context if index == 0 else context | (oob or {}), request)
        for index, name in enumerate(names)
    )
    return HttpResponse(html, status=status)


def error_status(error: LabError) -> int:
    """A refused write in HTML: 409 when the object changed under the user, 422 for anything else."""
    return 409 if error.status in (409, 412) else 422


def submit(form: Form, action: Callable[[dict], T]) -> tuple[T | None, list[dict], int]:
    """Validate `form` and call the service with its data: (result, errors, status), errors empty on success."""
    if not form.is_valid():
        return None, form_errors(form), 422
    try:
        return action(form.cleaned_data), [], 200
    except LabError as error:
        return None, lab_errors(error), error_status(error)


def lab_errors(error: LabError) -> list[dict]:
    return [{"field": error.field, "message": error.message, "line": error.line, "level": "error"}]


def form_errors(form: Form) -> list[dict]:
    return [
        {"field": None if name == "__all__" else name, "message": message, "line": None, "level": "error"}
        for name, messages in form.errors.items()
        for message in messages
    ]


def add_lab_error(form: Form, error: LabError, aliases: dict[str, str] | None = None) -> int:
    """Show a service's refusal beside the field it names (or above the form); the response status to use."""
    field = (aliases or {}).get(error.field or "", error.field)
    form.add_error(field if field in form.fields else None, error.message)
    return error_status(error)


def job_command(request: HttpRequest, job, service: Callable, done: str, url_name: str) -> HttpResponse:
    """A job's button (cancel, resume): call `service(job=, user=)`, say what happened, back to the job's page."""
    try:
        job = service(job=job, user=request.user)
    except LabError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, done.format(job=job))
    return redirect(url_name, pk=job.pk)
