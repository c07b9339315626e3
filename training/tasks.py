"""Celery tasks of the training queue (workers on GPU machines run `-Q training`): thin, idempotent, by id."""

from celery import shared_task

from training.services import nodes, prompts


@shared_task(acks_late=True, ignore_result=True)
def run_phase_node(phase_id: int, rank: int) -> str:
    return nodes.node_run(phase_id=phase_id, rank=rank)


@shared_task(acks_late=True, ignore_result=True)
def answer_prompt(prompt_id: int) -> None:
    prompts.prompt_answer(prompt_id=prompt_id)
