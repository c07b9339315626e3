"""HTML pages of generation: teachers, runs with their live progress, and samples. Writes go through services."""

from generation.views.runs import (
    run_cancel,
    run_create,
    run_detail,
    run_estimate,
    run_list,
    run_progress,
    run_resume,
    run_retry_failed,
)
from generation.views.samples import sample_detail, sample_list
from generation.views.teachers import teacher_create, teacher_default, teacher_edit, teacher_remove, teachers

__all__ = [
    "run_cancel",
    "run_create",
    "run_detail",
    "run_estimate",
    "run_list",
    "run_progress",
    "run_resume",
    "run_retry_failed",
    "sample_detail",
    "sample_list",
    "teacher_create",
    "teacher_default",
    "teacher_edit",
    "teacher_remove",
    "teachers",
]
