from django.contrib import admin

from evaluation.models import EvaluationJob
from labweb.admin import ReadOnlyAdmin


@admin.register(EvaluationJob)
class EvaluationJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "status", "model", "base_model", "done", "total", "created_at")
    list_filter = ("status", "backend")
    exclude = ("server_api_key",)  # write-only, as a teacher's key
