"""Celery tasks of the generation queue: thin wrappers that take ids and call services.

The services queue them by name (`labweb.jobs`), so this module is the only one that imports the other way.
"""

from celery import shared_task

from generation.services import items, runs


@shared_task
def dispatch_run(run_id: int) -> None:
    """Probe the teacher and queue the run's items; run_create and run_resume queue this once the run is committed."""
    runs.run_start(run_id=run_id)


@shared_task(acks_late=True)
def process_item(item_id: int) -> None:
    items.item_process(item_id=item_id)
