"""Celery tasks of the training queue (workers on GPU machines run `-Q training`): thin, idempotent, by id.

`build_dataset` is routed to the default queue instead (settings.CELERY_TASK_ROUTES): it needs no GPU.
"""

from celery import shared_task

from training.services import datasets, nodes, prompts


@shared_task(acks_late=True, ignore_result=True)
def run_phase_node(phase_id: int, rank: int) -> str:
    return nodes.node_run(phase_id=phase_id, rank=rank)


@shared_task(acks_late=True, ignore_result=True)
def answer_prompt(prompt_id: int) -> None:
    prompts.prompt_answer(prompt_id=prompt_id)


@shared_task(acks_late=True, ignore_result=True)
def build_dataset(dataset_id: int) -> None:
    datasets.dataset_build(dataset_id=dataset_id)
