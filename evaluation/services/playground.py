"""The chat playground: two models answer the same conversation side by side, their tokens streamed as they come.

A model is named by what LabWeb knows, never by a path typed in: a checkpoint, the base model of a training job,
or a teacher (a named OpenAI-compatible server, or a local one). Local models run in the web process, two at a
time at most stay loaded; a GGUF file is read from the Hugging Face folder made of it once, as the workers read
it (converted on first use, when no worker has yet), never de-quantized again per process.
"""

import json
import threading
from collections.abc import Iterator
from functools import lru_cache

from django.conf import settings

from curation.models import Leaf
from evaluation.core.judging import KEY_REFUSED, key_refusal
from evaluation.services.plan import seed_pairs
from generation.models import Teacher
from generation.sdg.teachers.server import server_message
from generation.services.teachers import local_model_source, resolve_local_model
from labweb.errors import LabError
from training.models import Checkpoint, TrainingJob

MAX_TURNS = 20
MAX_CHARS = 4000


def model_choices() -> list[tuple[str, str]]:
    out = []
    for checkpoint in Checkpoint.objects.select_related("phase__job").order_by("-created_at")[:200]:
        out.append(
            (f"checkpoint:{checkpoint.pk}", f"{checkpoint.phase.job} / {checkpoint.phase.name} / {checkpoint.name}")
        )
    for job in TrainingJob.objects.order_by("-created_at")[:100]:
        out.append((f"base:{job.pk}", f"Base of {job}: {job.base_model}"))
    for teacher in Teacher.objects.all():
        out.append((f"teacher:{teacher.pk}", f"Teacher {teacher.name} ({teacher.get_backend_display()})"))
    return out


def leaf_prompts(path: str) -> list[str]:
    leaf = Leaf.objects.filter(path=path).prefetch_related("seeds").first()
    if leaf is None:
        return []
    return [f"{c.strip()}\n\n{q}" if c else q for c, pairs in seed_pairs(leaf) for q, _ in pairs][:50]


def conversation(prompt: str, history: str = "") -> list[dict]:
    """The messages so far (JSON from the page: [{"role", "content"}]) and the new prompt, checked."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise LabError("Write a message.", field="prompt")
    if len(prompt) > MAX_CHARS:
        raise LabError(f"A message is at most {MAX_CHARS} characters.", field="prompt")
    try:
        turns = json.loads(history) if history else []
    except ValueError:
        raise LabError("The conversation so far is not JSON.", field="history") from None
    if not isinstance(turns, list) or len(turns) > 2 * MAX_TURNS or not all(
        isinstance(t, dict) and t.get("role") in ("user", "assistant") and isinstance(t.get("content"), str)
        and len(t["content"]) <= 4 * MAX_CHARS
        for t in turns
    ):  # fmt: skip
        raise LabError(
            f"The conversation is a list of at most {2 * MAX_TURNS} user and assistant turns.", field="history"
        )
    return [{"role": t["role"], "content": t["content"]} for t in turns] + [{"role": "user", "content": prompt}]


def speaker(value: str):
    """The model a choice names: (kind, what) with kind "local" (a folder) or "server" (a Teacher)."""
    kind, _, pk = (value or "").partition(":")
    try:
        pk = int(pk)
    except ValueError:
        raise LabError("Choose a model.", field="model") from None
    if kind == "checkpoint":
        checkpoint = Checkpoint.objects.filter(pk=pk).first()
        if checkpoint:
            return "local", (checkpoint.path, None)
    elif kind == "base":
        job = TrainingJob.objects.filter(pk=pk).first()
        if job:
            return "local", local_model_source(*resolve_local_model(job.base_model, job.gguf_file))
    elif kind == "teacher":
        teacher = Teacher.objects.filter(pk=pk).first()
        if teacher and teacher.backend == Teacher.Backend.LOCAL:
            return "local", local_model_source(*resolve_local_model(teacher.model, teacher.gguf_file))
        if teacher:
            return "server", teacher
    raise LabError("That model is gone; choose another.", field="model")


@lru_cache(maxsize=2)
def _local(path: str, gguf: str | None):
    from evaluation.core.local import LocalModel

    return LocalModel(path, gguf_file=gguf, device="cpu")


_LOCAL_LOCK = threading.Lock()


def stream(value: str, messages: list[dict]) -> Iterator[str]:
    """The answer, a piece at a time; a failure ends the stream with a line that says why (the page shows it)."""
    try:
        kind, what = speaker(value)
        if kind == "local":
            yield from _stream_local(*what, messages)
        else:
            yield from _stream_server(what, messages)
    except LabError as error:
        yield f"\n[{error.message}]"
    except Exception as error:  # noqa: BLE001 - a model that breaks mid-answer says so in its column
        yield f"\n[The model failed: {type(error).__name__}: {str(error)[:300]}]"


def _stream_local(path: str, gguf: str | None, messages: list[dict]) -> Iterator[str]:
    import torch
    from transformers import TextIteratorStreamer

    with _LOCAL_LOCK:
        model = _local(path, gguf)
    text = model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = model.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
    failure: list[BaseException] = []

    def generate():
        try:
            with torch.inference_mode():
                model.model.generate(
                    **encoded,
                    max_new_tokens=settings.LABWEB_PROMPT_MAX_TOKENS,
                    do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id,
                    streamer=streamer,
                )
        except BaseException as error:  # noqa: BLE001 - handed to the reading side
            failure.append(error)
            streamer.end()

    threading.Thread(target=generate, daemon=True).start()
    for piece in streamer:
        if piece:
            yield piece
    if failure:
        raise failure[0]


def _stream_server(teacher: Teacher, messages: list[dict]) -> Iterator[str]:
    import openai

    client = openai.OpenAI(
        base_url=teacher.base_url,
        api_key=teacher.api_key or "not-needed",
        timeout=teacher.timeout_seconds,
        max_retries=0,
    )
    try:
        chunks = client.chat.completions.create(
            model=teacher.model,
            messages=messages,
            temperature=0.0,
            max_tokens=min(teacher.max_tokens, settings.LABWEB_PROMPT_MAX_TOKENS * 4),
            stream=True,
        )
        for chunk in chunks:
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                yield piece
    except openai.APIStatusError as error:
        if error.status_code in KEY_REFUSED:
            message = key_refusal(
                who=f"The teacher {teacher.name}",
                endpoint=teacher.base_url,
                status=error.status_code,
                reason=server_message(error),
                has_key=teacher.has_api_key,
            )
            raise LabError(f"{message} Set its API key on the Teachers page.", field="model") from None
        reason = server_message(error)
        raise LabError(
            f"The server at {teacher.base_url} answered HTTP {error.status_code}: {reason}", field="model"
        ) from None
    except openai.APIError as error:
        raise LabError(f"Cannot reach {teacher.base_url}: {error}", field="model") from None
    finally:
        client.close()
