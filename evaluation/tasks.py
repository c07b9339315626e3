"""Celery tasks of the evaluation app, on the training queue (where the weights and the GPUs are)."""

from celery import shared_task
from django.conf import settings

from evaluation.services import runner


@shared_task(bind=True, acks_late=True, ignore_result=True)
def run_evaluation(self, job_id: int) -> str:
    outcome = runner.evaluation_run(job_id=job_id)
    if outcome == runner.WAITING:  # asks again until its training job stops; holds no thread meanwhile
        raise self.retry(countdown=settings.LABWEB_EVALUATION_WAIT_SECONDS, max_retries=None)
    return outcome
