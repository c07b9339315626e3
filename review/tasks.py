"""Bulk review jobs on the default queue: thin, idempotent (a job resumes from its own cursor)."""

from celery import shared_task

from review.services import bulk


@shared_task(acks_late=True)
def bulk_run(job_id: int) -> str:
    return bulk.bulk_run(job_id=job_id).status


@shared_task(acks_late=True)
def bulk_undo_run(job_id: int) -> str:
    return bulk.bulk_undo_run(job_id=job_id).status
