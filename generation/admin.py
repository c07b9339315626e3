"""Admin for watching generation jobs. Rows are read-only here: changes go through the services (the pages,
the API, or the run actions below), so the admin never bypasses a check or leaks a teacher's API key."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from generation import selectors
from generation.models import (
    GenerationRun,
    LeafCounter,
    RunCounter,
    RunEvent,
    Sample,
    Teacher,
    TeacherResponse,
    WorkItem,
)
from generation.services.runs import run_cancel, run_resume
from labweb.admin import OperatorActions, ReadOnlyAdmin, run_command


@admin.register(Teacher)
class TeacherAdmin(ReadOnlyAdmin):
    list_display = ["name", "backend", "model", "base_url", "has_api_key", "max_concurrency", "created_at"]
    list_filter = ["backend"]
    search_fields = ["name", "model", "base_url"]
    exclude = ["api_key"]
    readonly_fields = ["has_api_key"]

    @admin.display(boolean=True, description="API key")
    def has_api_key(self, teacher: Teacher) -> bool:
        return teacher.has_api_key


@admin.register(GenerationRun)
class GenerationRunAdmin(OperatorActions, ReadOnlyAdmin):
    list_display = ["__str__", "status", "teacher", "scope", "created_at", "created_by", "progress", "samples"]
    list_filter = ["status", "scope", "teacher"]
    search_fields = ["name", "error"]
    date_hierarchy = "created_at"
    actions = ["cancel_runs", "resume_runs"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[GenerationRun]:
        return selectors.run_list()

    @admin.display(description="Progress")
    def progress(self, run: GenerationRun) -> str:
        failed = f", {run.items_failed} failed" if run.items_failed else ""
        return f"{selectors.run_percent(run)}% ({run.items_done}/{run.items_total} items{failed})"

    @admin.display(description="Kept / target")
    def samples(self, run: GenerationRun) -> str:
        return f"{run.kept_total} / {run.target_total}"

    @admin.action(description="Cancel the selected runs", permissions=["operate"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[GenerationRun]) -> None:
        run_command(self, request, queryset, lambda run: run_cancel(run=run, user=request.user), "cancelled")

    @admin.action(description="Resume the selected runs", permissions=["operate"])
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[GenerationRun]) -> None:
        run_command(self, request, queryset, lambda run: run_resume(run=run, user=request.user), "resumed")


@admin.register(WorkItem)
class WorkItemAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "run",
        "kind",
        "state",
        "attempts",
        "kept",
        "target",
        "lease_owner",
        "lease_until",
        "short_error",
    ]
    list_filter = ["state", "kind"]
    search_fields = ["leaf_path", "error"]
    list_select_related = ["run"]
    raw_id_fields = ["run", "leaf"]

    @admin.display(description="Error")
    def short_error(self, item: WorkItem) -> str:
        return item.error[:120]


@admin.register(Sample)
class SampleAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "leaf_path", "kind", "run", "teacher_model", "created_at"]
    list_filter = ["kind", ("duplicate_of", admin.EmptyFieldListFilter), "run"]
    search_fields = ["question", "leaf_path"]
    list_select_related = ["run"]
    raw_id_fields = ["run", "item", "leaf", "teacher"]


@admin.register(TeacherResponse)
class TeacherResponseAdmin(ReadOnlyAdmin):
    list_display = ["key", "model", "prompt_tokens", "completion_tokens", "finish_reason", "created_at"]
    list_filter = ["model", "finish_reason"]
    search_fields = ["key", "model"]


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "run", "level", "leaf_path", "message"]
    list_filter = ["level", "run"]
    search_fields = ["message", "leaf_path"]
    list_select_related = ["run"]


@admin.register(RunCounter)
class RunCounterAdmin(ReadOnlyAdmin):
    """A run's totals as counted when items change (`manage.py generation_recount` repairs them)."""

    list_display = ["run", "name", "shard", "value"]
    list_filter = ["run"]
    search_fields = ["name"]


@admin.register(LeafCounter)
class LeafCounterAdmin(ReadOnlyAdmin):
    list_display = ["run", "leaf_path", "kind", "items", "pending", "running", "done", "failed", "kept"]
    list_filter = ["run", "kind"]
    search_fields = ["leaf_path"]
