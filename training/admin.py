"""Admin for watching training jobs; cancel and resume go through the services like everywhere else."""

from django.contrib import admin

from labweb.admin import OperatorActions, ReadOnlyAdmin, run_command
from training.models import Checkpoint, StepMetric, TrainingEvent, TrainingJob, TrainingNode, TrainingPhase
from training.services.jobs import job_cancel, job_resume


@admin.register(TrainingJob)
class TrainingJobAdmin(OperatorActions, ReadOnlyAdmin):
    list_display = ["__str__", "status", "base_model", "plan", "nodes", "processes_per_node", "created_at"]
    list_filter = ["status", "plan"]
    search_fields = ["name", "base_model", "error"]
    actions = ["cancel_jobs", "resume_jobs"]

    @admin.action(description="Cancel the selected jobs", permissions=["operate"])
    def cancel_jobs(self, request, queryset):
        run_command(self, request, queryset, lambda job: job_cancel(job=job, user=request.user), "cancelled")

    @admin.action(description="Resume the selected jobs", permissions=["operate"])
    def resume_jobs(self, request, queryset):
        run_command(self, request, queryset, lambda job: job_resume(job=job, user=request.user), "resumed")


@admin.register(TrainingPhase)
class TrainingPhaseAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "step", "total_steps", "epoch", "data_samples", "exit_kind"]
    list_filter = ["status", "exit_kind"]


@admin.register(TrainingNode)
class TrainingNodeAdmin(ReadOnlyAdmin):
    list_display = ["phase", "rank", "lease_owner", "lease_until", "attempts", "exit_code"]


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "step", "epoch", "samples_seen", "path", "created_at"]


@admin.register(StepMetric)
class StepMetricAdmin(ReadOnlyAdmin):
    list_display = ["phase", "step", "loss", "learning_rate", "grad_norm", "tokens_per_second"]


@admin.register(TrainingEvent)
class TrainingEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "job", "phase", "level", "message"]
    list_filter = ["level"]
