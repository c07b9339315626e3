"""Teachers: an OpenAI-compatible server or a local transformers model, behind one async interface.

Every call goes through `CachedTeacher`, which keys the response by (model, messages, sampling, seed), so a
resumed run replays what it already paid for instead of asking again.
"""

import asyncio
import contextvars
import hashlib
import heapq
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from labweb.errors import LabError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None


@dataclass(frozen=True)
class Shape:
    """The form an answer must take, for a teacher that steers its own decoding (the local backend).

    A server is only sent the prompt, which states the format; a small local model does not follow it
    reliably, so the local backend starts its answer with `start` and, when the answer has no line
    `verdict` + one of `choices`, ends it with that line, choosing the value the model finds most likely.
    """

    start: str = ""
    verdict: str = ""
    choices: tuple[str, ...] = ()


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    finish_reason: str | None = None


class TeacherError(LabError):
    """The teacher failed; `retryable` when waiting and asking again may help (429, 5xx, timeouts)."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None):
        super().__init__(message, field="teacher")
        self.retryable = retryable
        self.http_status = status


class Teacher(Protocol):
    model: str
    max_concurrency: int
    steers: bool  # whether `shape` changes what complete() answers

    async def complete(
        self, messages: list[dict], sampling: Sampling, stats: "CallStats | None" = None, shape: Shape | None = None
    ) -> Completion: ...


@dataclass
class CallStats:
    calls: int = 0
    cached: int = 0
    retries: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # time the teacher worked on our calls: inside a concurrency slot, not waiting for one

    def add(self, other: "CallStats") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        return asdict(self)


# How many teacher calls depend on the answer of the call being made (set by the pipelines around each call).
call_depth: contextvars.ContextVar[int] = contextvars.ContextVar("labweb_call_depth", default=0)


class ConcurrencyLimit:
    """A limit on calls in flight shared by every event loop in the process.

    Work items share one loop (generation.sdg.loop), but a teacher may also be driven from other loops
    (asyncio.run in a script or a test), and the limit must hold across all of them."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self._lock = threading.Lock()
        self._in_flight = 0
        self._order = itertools.count()
        # A heap of (-depth, arrival, loop, future): the call with the most calls waiting on its answer goes
        # first, then the earliest. A run's last items then finish together instead of one long chain
        # leaving slots idle at its end.
        self._waiters: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future]] = []

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_flight < self.limit and not self._waiters:
                self._in_flight += 1
                return self
            future = loop.create_future()
            entry = (-call_depth.get(), next(self._order), loop, future)
            heapq.heappush(self._waiters, entry)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                    raise
            await self.__aexit__(None, None, None)  # the slot was already handed to us: give it on
            raise
        return self

    async def __aexit__(self, *exc):
        with self._lock:
            while self._waiters:
                _, _, loop, future = heapq.heappop(self._waiters)
                if not loop.is_closed():
                    # The slot passes straight to the waiter (_in_flight stays the same); a waiter cancelled
                    # meanwhile finds itself off the list and passes the slot on in its turn.
                    loop.call_soon_threadsafe(_wake, future)
                    return
            self._in_flight -= 1


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


_LIMITS: dict[str, ConcurrencyLimit] = {}
_LIMITS_LOCK = threading.Lock()


def shared_limit(key: str, limit: int) -> ConcurrencyLimit:
    with _LIMITS_LOCK:
        found = _LIMITS.get(key)
        if found is None or found.limit != limit:
            found = _LIMITS[key] = ConcurrencyLimit(limit)
        return found


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2)


class OpenAITeacher:
    """Any server that speaks OpenAI chat completions: vLLM, llama.cpp server, Ollama, OpenAI."""

    steers = False  # servers differ in how (and whether) they take guided decoding; the prompt states the format

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout: float = 120.0,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
    ):
        self.base_url = base_url
        self.model = model
        self.api_key = api_key or "not-needed"
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy()
        self.limit = shared_limit(f"openai:{base_url}:{model}", max_concurrency)
        self._clients: dict[int, object] = {}

    def _client(self):
        # An AsyncOpenAI client belongs to the event loop it was made in (one for every work item, see loop.py).
        from openai import AsyncOpenAI

        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = self._clients[loop_id] = AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=0
            )
        return client

    async def aclose(self) -> None:
        """Close the client of the running event loop (each asyncio.run makes and ends its own loop)."""
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.close()

    async def complete(
        self, messages: list[dict], sampling: Sampling, stats: CallStats | None = None, shape: Shape | None = None
    ) -> Completion:
        import openai
        from openai.types.chat import ChatCompletion

        stats = stats if stats is not None else CallStats()
        last: TeacherError | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt - 1))
            try:
                async with self.limit:
                    started = time.perf_counter()
                    try:
                        # What chat.completions.create() sends, posted as is: create() first walks the body
                        # against its typed schema, a third of the client's CPU a call, and changes nothing in a
                        # body of plain strings and numbers.
                        response = await self._client().post(
                            "/chat/completions",
                            cast_to=ChatCompletion,
                            body={
                                "model": self.model,
                                "messages": messages,
                                "temperature": sampling.temperature,
                                "top_p": sampling.top_p,
                                "max_tokens": sampling.max_tokens,
                                "seed": sampling.seed,
                                "n": 1,
                            },
                        )
                    finally:
                        stats.seconds += time.perf_counter() - started
            except openai.APITimeoutError:
                last = TeacherError(
                    f"The teacher at {self.base_url} did not answer within {self.timeout:g} s.", retryable=True
                )
            except openai.APIConnectionError as exc:
                last = TeacherError(
                    f"Cannot reach the teacher at {self.base_url}: {exc.__cause__ or exc}. Check the "
                    "teacher's URL, or that its server is running.",
                    retryable=True,
                )
            except openai.APIStatusError as exc:
                retryable = exc.status_code == 429 or exc.status_code >= 500
                last = TeacherError(
                    f"The teacher answered HTTP {exc.status_code}: {_error_text(exc)}",
                    retryable=retryable,
                    status=exc.status_code,
                )
                if not retryable:
                    raise last from None
            except (ValueError, openai.APIResponseValidationError) as exc:
                last = TeacherError(
                    f"The teacher at {self.base_url} sent an answer that is not valid JSON ({str(exc)[:200]}).",
                    retryable=True,
                )
            else:
                try:
                    choice = response.choices[0]
                    text = choice.message.content
                except (AttributeError, IndexError, TypeError):
                    text = None
                if isinstance(text, str):
                    usage = response.usage
                    return Completion(
                        # PostgreSQL text cannot hold NUL; no prompt format of ours needs one.
                        text=text.replace("\x00", ""),
                        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                        finish_reason=getattr(choice, "finish_reason", None),
                    )
                last = TeacherError(f"The teacher at {self.base_url} answered without message content.", retryable=True)
            stats.errors += 1
        raise last or TeacherError("The teacher failed.")


def _error_text(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
    return (str(getattr(exc, "message", "")) or str(exc))[:500]


class LocalTeacher:
    """A transformers model in the worker process (small models and the embedded default)."""

    _loaded: dict[tuple, tuple] = {}
    _load_lock = threading.Lock()
    steers = True
    reasons_tokens = 96  # a judge's reasons before its verdict: enough to say why, short enough for a CPU

    def __init__(self, *, model: str, gguf_file: str | None = None, max_concurrency: int = 1, device: str = "cpu"):
        self.model = model if not gguf_file else f"{model}#{gguf_file}"
        self.path = model
        self.gguf_file = gguf_file
        self.device = device
        self.max_concurrency = 1
        self.limit = shared_limit(f"local:{self.model}", 1)

    def load(self):
        key = (self.path, self.gguf_file, self.device)
        with self._load_lock:
            if key not in self._loaded:
                try:
                    from transformers import AutoModelForCausalLM, AutoTokenizer

                    kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
                    tokenizer = AutoTokenizer.from_pretrained(self.path, **kwargs)
                    model = AutoModelForCausalLM.from_pretrained(self.path, **kwargs).to(self.device).eval()
                except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear message
                    raise TeacherError(
                        f"Cannot load the local teacher model {self.model!r}: {str(exc).rstrip('.')}. Install it "
                        "or point LabWeb at a server: add a teacher with an OpenAI-compatible URL (vLLM, llama.cpp, "
                        "Ollama) and use it for the run."
                    ) from None
                self._loaded[key] = (tokenizer, model)
            return self._loaded[key]

    def _generate(self, messages: list[dict], sampling: Sampling, shape: Shape) -> Completion:
        import torch

        tokenizer, model = self.load()
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + shape.start
        encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.device)
        limit = min(sampling.max_tokens, self.reasons_tokens) if shape.choices else sampling.max_tokens
        generator_kwargs = {"max_new_tokens": limit, "pad_token_id": tokenizer.eos_token_id}
        if sampling.temperature > 0:
            generator_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        else:
            generator_kwargs.update(do_sample=False)
        with torch.inference_mode():
            output = model.generate(
                input_ids, attention_mask=encoded["attention_mask"].to(self.device), **generator_kwargs
            )
        new = output[0][input_ids.shape[1] :]
        hit_limit = int(new.shape[0]) >= limit and int(new[-1]) != tokenizer.eos_token_id
        text = tokenizer.decode(new, skip_special_tokens=True)
        completion_tokens = int(new.shape[0])
        if shape.choices and not _has_verdict(text, shape):
            # The model gave reasons but no usable verdict line: end the answer with the line the prompt asks
            # for, taking the value the model itself finds most likely after its reasons.
            reasons = text.rstrip()
            lead = f"{reasons}\n{shape.verdict}" if reasons else shape.verdict
            choice = self._most_likely(tokenizer, model, prompt + lead, shape.choices)
            text, hit_limit = lead + choice, False
            completion_tokens += len(tokenizer(lead[len(reasons) :] + choice, add_special_tokens=False)["input_ids"])
        return Completion(
            text=(shape.start + text).replace("\x00", ""),
            prompt_tokens=int(input_ids.shape[1]),
            completion_tokens=completion_tokens,
            finish_reason="length" if hit_limit else "stop",
        )

    def _most_likely(self, tokenizer, model, context: str, choices: tuple[str, ...]) -> str:
        import torch

        base = tokenizer(context, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in choices:
            ids = tokenizer(context + choice, add_special_tokens=False)["input_ids"]
            # The choice's own tokens start where the two tokenisations part (a merge may swallow a space).
            shared = next((n for n, (a, b) in enumerate(zip(base, ids, strict=False)) if a != b), len(base))
            shared = max(1, min(shared, len(ids) - 1))
            with torch.inference_mode():
                logits = model(torch.tensor([ids], device=self.device)).logits[0, shared - 1 : -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(ids[shared:], device=self.device).unsqueeze(1)
            scores.append(float(logprobs.gather(1, targets).sum()))
        return choices[scores.index(max(scores))]

    async def complete(
        self, messages: list[dict], sampling: Sampling, stats: CallStats | None = None, shape: Shape | None = None
    ) -> Completion:
        stats = stats if stats is not None else CallStats()
        async with self.limit:
            started = time.perf_counter()
            try:
                return await asyncio.to_thread(self._generate, messages, sampling, shape or Shape())
            finally:
                stats.seconds += time.perf_counter() - started


def _has_verdict(text: str, shape: Shape) -> bool:
    values = "|".join(re.escape(choice.strip()) for choice in shape.choices)
    return re.search(rf"{re.escape(shape.verdict)}\s*\**\s*(?:{values})\b", text, re.I) is not None


def cache_key(model: str, messages: list[dict], sampling: Sampling, shape: Shape | None = None) -> str:
    request = {"model": model, "messages": messages, "sampling": asdict(sampling)}
    if shape is not None:
        request["shape"] = asdict(shape)
    payload = json.dumps(
        request,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class CachedTeacher:
    """A teacher with a content-addressed response cache and call statistics.

    `lookup(key)` returns a stored Completion or None; `store(key, completion)` keeps one. Both are
    coroutines so that the Django shell can put them on its own thread.
    """

    teacher: Teacher
    lookup: Callable
    store: Callable
    stats: CallStats = field(default_factory=CallStats)

    @property
    def model(self) -> str:
        return self.teacher.model

    async def complete(self, messages: list[dict], sampling: Sampling, shape: Shape | None = None) -> Completion:
        # A shape is part of the request only for a teacher it steers; a server is sent the prompt alone.
        shape = shape if getattr(self.teacher, "steers", False) else None
        key = cache_key(self.teacher.model, messages, sampling, shape)
        found = await self.lookup(key)
        if found is not None:
            self.stats.cached += 1
            found.cached = True
            return found
        completion = await self.teacher.complete(messages, sampling, self.stats, shape=shape)
        self.stats.calls += 1
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        await self.store(key, completion)
        return completion
