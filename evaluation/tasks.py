"""Celery tasks of the evaluation app, on the training queue (where the weights and the GPUs are)."""

from celery import shared_task

from evaluation.services import runner


@shared_task(acks_late=True, ignore_result=True)
def run_evaluation(job_id: int) -> str:
    return runner.evaluation_run(job_id=job_id)
