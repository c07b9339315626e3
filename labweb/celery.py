import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labweb.settings")

app = Celery("labweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.worker_process_init.connect
def _keep_leases(**_) -> None:
    """Every worker process renews the leases of the units it holds (labweb.jobs), whatever its pool."""
    from labweb import jobs

    jobs.start_lease_keeper()
