"""Bulk review jobs on the default queue: thin, idempotent (a job resumes from its own cursor). The job holds a
lease while a worker runs it; a redelivered or re-sent task finds it held, or finished, and leaves it."""

from celery import shared_task

from review.services import bulk


@shared_task(acks_late=True, ignore_result=True)
def bulk_run(job_id: int) -> str:
    return bulk.bulk_run(job_id=job_id).status


@shared_task(acks_late=True, ignore_result=True)
def bulk_undo_run(job_id: int) -> str:
    return bulk.bulk_undo_run(job_id=job_id).status
