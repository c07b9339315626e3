"""Periodic work that spans apps, on the default queue (never behind long jobs on the generation or training queues)."""

from celery import shared_task

from labweb import jobs


@shared_task(ignore_result=True)
def reap_expired() -> dict[str, int]:
    """Hand back the units of work whose worker died, for every kind of job that registered a reaper."""
    return jobs.reap_all()
