"""Review in the admin: read-only. Decisions are append-only, and every change goes through the services."""

from django.contrib import admin
from django.http import HttpRequest

from labweb.admin import ReadOnlyAdmin as SharedReadOnly
from review.models import BulkJob, Counter, Decision, ReviewItem, ReviewPolicy


class ReadOnlyAdmin(SharedReadOnly):
    # Decisions are append-only: not even the admin deletes one (or the item it belongs to).
    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ["id", "item", "reviewer", "action", "reason", "state_after", "job", "created_at"]
    list_filter = ["action", "reason"]
    raw_id_fields = ["item", "undoes", "job"]


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnlyAdmin):
    list_display = ["sample_id", "leaf_path", "state", "version", "score", "required", "votes", "decided_at"]
    list_filter = ["state", "kind"]
    raw_id_fields = ["sample", "decision"]
    show_full_result_count = False


@admin.register(BulkJob)
class BulkJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "reviewer", "action", "status", "expected", "done", "undone", "created_at"]


@admin.register(Counter)
class CounterAdmin(ReadOnlyAdmin):
    list_display = ["run", "leaf_path", "pending", "approved", "rejected", "edited"]


@admin.register(ReviewPolicy)
class ReviewPolicyAdmin(ReadOnlyAdmin):
    list_display = ["run", "required", "rule"]
