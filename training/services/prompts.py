"""Asking a checkpoint a question: queued from the page, answered by a training worker (where the weights are)."""

import logging
import time
from functools import lru_cache

from django.conf import settings

from labweb import jobs
from labweb.errors import LabError
from training.models import Checkpoint, CheckpointPrompt

MAX_PROMPT_CHARS = 4000
TASK = "training.tasks.answer_prompt"
logger = logging.getLogger(__name__)


def prompt_ask(*, checkpoint: Checkpoint, prompt: str, user) -> CheckpointPrompt:
    prompt = (prompt or "").strip()
    if not prompt:
        raise LabError("Write a question for the model.", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise LabError(f"A question is at most {MAX_PROMPT_CHARS} characters.", field="prompt")
    asked = CheckpointPrompt.objects.create(checkpoint=checkpoint, prompt=prompt, created_by=user)
    jobs.send_task_on_commit(TASK, asked.pk)
    return asked


@lru_cache(maxsize=1)  # the last checkpoint asked stays loaded: the next question to it costs no load
def _model(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.trainer.data import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return tokenizer, model


def prompt_answer(*, prompt_id: int) -> CheckpointPrompt:
    """Greedy decoding of up to LABWEB_PROMPT_MAX_TOKENS tokens; idempotent (the move from queued to running is
    the claim: a second message finds the prompt taken or answered and leaves it)."""
    import torch

    asked = CheckpointPrompt.objects.select_related("checkpoint").get(pk=prompt_id)
    if not jobs.transition(asked, to=jobs.Status.RUNNING, allowed=[jobs.Status.QUEUED]):
        return asked
    started = time.perf_counter()
    try:
        tokenizer, model = _model(asked.checkpoint.path)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": asked.prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=settings.LABWEB_PROMPT_MAX_TOKENS, do_sample=False)
        answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    except (OSError, ValueError, RuntimeError) as error:
        jobs.transition(
            asked,
            to=jobs.Status.FAILED,
            allowed=[jobs.Status.RUNNING],
            error=f"The checkpoint could not answer: {error}",
        )
        return asked
    jobs.transition(
        asked,
        to=jobs.Status.SUCCEEDED,
        allowed=[jobs.Status.RUNNING],
        answer=answer,
        seconds=round(time.perf_counter() - started, 2),
    )
    return asked


def prompts_reap() -> int:
    """Send again the questions still queued whose message no worker took (the periodic reaper calls this). A
    prompt keeps no log of its own: the worker's log says so."""

    def unclaimed(asked: CheckpointPrompt) -> None:
        logger.warning("Prompt %s to %s: %s", asked.pk, asked.checkpoint_id, jobs.resent_message(asked))
        jobs.send_task_on_commit(TASK, asked.pk)

    return jobs.resend_unclaimed(CheckpointPrompt.objects.filter(status=jobs.Status.QUEUED), unclaimed)
