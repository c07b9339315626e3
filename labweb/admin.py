"""Admin pieces every app shares: rows are read-only there; every change goes through a service, which checks it
and records it (pages, API, or the admin actions that call the same services)."""

from django.contrib import admin, messages
from django.http import HttpRequest

from labweb.errors import LabError
from labweb.roles import OPERATOR, has_role


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows to look at, never to edit."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ReadOnlyInline:
    """An inline with the same rule as `ReadOnlyAdmin`."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def run_command(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset, command, verb: str) -> None:
    """An admin action: `command(obj)` (a service call) on each selected row, saying what happened to each."""
    done = 0
    for obj in queryset:
        try:
            command(obj)
            done += 1
        except LabError as error:
            modeladmin.message_user(request, f"{obj}: {error.message}", messages.WARNING)
    if done:
        modeladmin.message_user(request, f"{done} {verb}.", messages.SUCCESS)


class OperatorActions:
    """Admin actions marked `permissions=["operate"]` are offered to operators only."""

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, OPERATOR)
