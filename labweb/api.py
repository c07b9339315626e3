"""What every app's API shares: one JSON error shape ({"error": {"message", "field", "line", "path"},
"errors": [...]}) and the If-Match / revision plumbing of optimistic locking."""

from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labweb.errors import ConflictError, LabError, PreconditionFailed

T = TypeVar("T")


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True)
    line = serializers.IntegerField(allow_null=True)
    path = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    """The one error shape, for the schema: the first error, and all of them."""

    error = ErrorDetailSerializer()
    errors = ErrorDetailSerializer(many=True)


def _flatten(detail, prefix: str = "") -> list[dict]:
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else None
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else (name or prefix))
        return out
    if isinstance(detail, list):
        out = []
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                out += _flatten(value, f"{prefix}[{index}]")
            else:
                out += _flatten(value, prefix)
        return out
    return [{"message": str(detail), "field": prefix or None, "line": None, "path": None}]


def exception_handler(exc, context):
    if isinstance(exc, LabError):
        error = exc.as_dict()
        return Response({"error": error, "errors": [error]}, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    errors = _flatten(
        response.data if isinstance(exc, exceptions.ValidationError) else response.data.get("detail", response.data)
    )
    response.data = {"error": errors[0] if errors else {"message": "Error."}, "errors": errors}
    if response.status_code == status.HTTP_401_UNAUTHORIZED and not response.has_header("WWW-Authenticate"):
        response.status_code = status.HTTP_403_FORBIDDEN
    return response


def expected_revision(request, data: dict) -> int | None:
    """The revision the client edited: If-Match (the ETag the API issued) or a `revision` field in the body."""
    header = request.headers.get("If-Match")
    if header:
        try:
            return int(header.strip().removeprefix("W/").strip('"'))
        except ValueError:
            raise LabError(f"If-Match {header!r} is not an ETag this API issued.", field="If-Match") from None
    return data.get("revision")


def call_with_precondition(request, fn: Callable[..., T], **kwargs) -> T:
    """Call a service; a stale version is 412 when the client sent If-Match, else the service's 409."""
    try:
        return fn(**kwargs)
    except ConflictError as error:
        if request.headers.get("If-Match"):
            raise PreconditionFailed(error.message, field="If-Match", path=error.path) from None
        raise
