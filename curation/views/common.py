"""What every curation page shares: role checks, htmx partial responses, LabError as form errors."""

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from curation.taxonomy import LabError
from labweb.roles import CURATOR, role_required, user_roles

curator_required = role_required(CURATOR)
T = TypeVar("T")


def any_role_required(view: Callable) -> Callable:
    """Reads need a role too: a signed-in user whom nobody has given a role sees nothing."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not user_roles(request.user):
            raise PermissionDenied("You have no LabWeb role yet; ask an administrator for one.")
        return view(request, *args, **kwargs)

    return wrapped


def is_partial(request: HttpRequest) -> bool:
    """An htmx request wants a fragment; a history restore (reload after hx-push-url) wants the page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request


def render_fragments(
    request: HttpRequest, template: str, names: list[str], context: dict, *, status: int = 200
) -> HttpResponse:
    """Several partials of one template in one response: the swapped one first, out-of-band ones after."""
    html = "".join(render_to_string(f"{template}#{name}", context, request) for name in names)
    return HttpResponse(html, status=status)


def submit(form: Form, action: Callable[[dict], T]) -> tuple[T | None, list[dict], int]:
    """Validate `form` and call the service with its data: (result, errors, status), errors empty on success."""
    if not form.is_valid():
        return None, form_errors(form), 422
    try:
        return action(form.cleaned_data), [], 200
    except LabError as error:
        return None, lab_errors(error), error_status(error)


def error_status(error: LabError) -> int:
    return error.status if error.status == 409 else 422


def lab_errors(error: LabError) -> list[dict]:
    return [{"field": error.field, "message": error.message, "line": error.line, "level": "error"}]


def form_errors(form: Form) -> list[dict]:
    return [
        {"field": None if name == "__all__" else name, "message": message, "line": None, "level": "error"}
        for name, messages in form.errors.items()
        for message in messages
    ]
