import os

from celery import Celery, Task, signals
from django.db import InterfaceError, OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labweb.settings")


class LabTask(Task):
    """Every LabWeb task: a database that is briefly away or locked retries the task, with backoff.

    A task that raised before its unit was claimed holds no lease, so the reaper would never send it again: an
    item, a run's dispatch or an import would stay queued for good. Every task is idempotent, so a retry is safe.
    """

    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 10


app = Celery("labweb", task_cls=LabTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.worker_process_init.connect
def _keep_leases(**_) -> None:
    """Every worker process renews the leases of the units it holds (labweb.jobs), whatever its pool."""
    from labweb import jobs

    jobs.start_lease_keeper()


@signals.worker_init.connect
def _warm_generation(sender=None, **_) -> None:
    """A worker that takes generation items imports the teacher client before it says it is ready: `openai`
    costs 1-2 s of CPU to import, which every item of a run's first wave would otherwise wait for."""
    consumed = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    if consumed is not None and "generation" in (consumed.consume_from or consumed):
        import openai  # noqa: F401
