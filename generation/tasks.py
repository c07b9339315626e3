"""Celery tasks of the generation queue: thin wrappers that take ids and call services."""

from celery import shared_task

from generation.services import items, runs


@shared_task(acks_late=True, ignore_result=True)
def process_item(item_id: int) -> str:
    return items.item_process(item_id=item_id)


@shared_task(ignore_result=True)
def dispatch_run(run_id: int) -> int:
    return runs.run_dispatch(run_id=run_id)


@shared_task(ignore_result=True)
def requeue_expired() -> int:
    return runs.requeue_expired()
