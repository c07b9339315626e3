from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.shortcuts import redirect
from django.views import defaults
from django.views.decorators.http import require_GET

from labweb.celery import app as celery_app


def home(request: HttpRequest):
    return redirect("curation:tree")


def not_found(request: HttpRequest, exception=None):
    """An address under /api/ that names no endpoint answers in the API's one error shape, so that a client
    reads every refusal the same way; elsewhere, Django's page."""
    if request.path.startswith("/api/"):
        error = {"message": f"There is no API endpoint at {request.path}."}
        return JsonResponse({"error": error, "errors": [error]}, status=404)
    return defaults.page_not_found(request, exception)


@login_not_required
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: the database and the broker answer."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        checks["database"] = f"error: {exc}"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {exc}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)
