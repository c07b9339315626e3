"""Sending Celery tasks by name, so that a service need not import the tasks module that calls it."""

from django.db import transaction


def send_task(name: str, *args) -> None:
    """Queue the registered task `name` (eager under CELERY_TASK_ALWAYS_EAGER, as `.delay()` is)."""
    from labweb.celery import app

    try:
        task = app.tasks[name]
    except KeyError:
        # Every app's tasks module is imported by its AppConfig.ready(): a miss is a misspelt name.
        raise LookupError(f"No Celery task is registered as {name!r}.") from None
    task.apply_async(args)


def send_task_on_commit(name: str, *args) -> None:
    """Queue `name` once the current transaction commits, so the task finds what the transaction wrote."""
    transaction.on_commit(lambda: send_task(name, *args))
