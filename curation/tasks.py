"""Celery tasks of the curation app, on the default queue (CPU and database work, no GPU).

The services queue them by name (`labweb.jobs`), so this module is the only one that imports the other way.
"""

from celery import shared_task

from curation.services.imports import jobs


@shared_task(acks_late=True, ignore_result=True)
def run_import(job_id: int) -> str:
    return jobs.import_job_run(job_id=job_id)
