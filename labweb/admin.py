"""What every app's admin shares: rows are read-only there; changes go through the services (pages, API, actions)."""

from django.contrib import admin, messages
from django.http import HttpRequest

from labweb.errors import LabError


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
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
