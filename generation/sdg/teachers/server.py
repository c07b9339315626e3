"""A teacher on any server that speaks OpenAI chat completions: vLLM, llama.cpp server, Ollama, OpenAI."""

import asyncio
import re
import time
from html import unescape
from html.parser import HTMLParser

from generation.sdg.teachers.base import CallStats, Completion, Sampling, Shape, TeacherError
from generation.sdg.teachers.limits import Budget, process_budget
from generation.sdg.teachers.retry import RetryPolicy


def _json_schema(schema: dict) -> dict:
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    }


def _vllm_guided(schema: dict) -> dict:
    # vLLM's own parameters: `structured_outputs` from 0.10, `guided_json` before (each ignores the other's).
    return {"structured_outputs": {"json": schema}, "guided_json": schema}


# How each answer format asks a server for an answer of a JSON schema ("text": it is not asked; the prompt says).
ANSWER_FORMATS = {"text": None, "json_schema": _json_schema, "vllm": _vllm_guided}


class OpenAITeacher:
    """Any server that speaks OpenAI chat completions: vLLM, llama.cpp server, Ollama, OpenAI.

    `replicas` are more servers of the same model, as (URL, limit), beside `base_url` with `max_concurrency`.
    Each call takes a slot of `budget` (by default counted in this process), which picks the least loaded
    endpoint that is up; an endpoint that cannot be reached or answers 5xx is taken out for a while."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout: float = 120.0,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        answer_format: str = "text",
        replicas: list[tuple[str, int]] = (),
        budget: Budget | None = None,
    ):
        if answer_format not in ANSWER_FORMATS:
            raise TeacherError(f"Unknown answer format {answer_format!r}; one of {', '.join(ANSWER_FORMATS)}.")
        self.answer_format = answer_format
        # Held to a shape only where the server takes a schema (see ANSWER_FORMATS); else the prompt states it.
        self.steers = answer_format != "text"
        self.base_url = base_url
        self.endpoints = [(base_url, max_concurrency), *((url, int(limit)) for url, limit in replicas)]
        self.model = model
        self.api_key = api_key or "not-needed"
        self.timeout = timeout
        self.max_concurrency = sum(limit for _, limit in self.endpoints)
        self.retry = retry or RetryPolicy()
        limits = [limit for _, limit in self.endpoints]
        self.budget = budget or process_budget(budget_name(model, [url for url, _ in self.endpoints]), limits)
        self._clients: dict[tuple[int, int], object] = {}

    def _client(self, endpoint: int):
        # An AsyncOpenAI client belongs to the event loop it was made in (one for every work item, see loop.py).
        from openai import AsyncOpenAI

        key = (id(asyncio.get_running_loop()), endpoint)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = AsyncOpenAI(
                base_url=self.endpoints[endpoint][0], api_key=self.api_key, timeout=self.timeout, max_retries=0
            )
        return client

    async def complete(
        self, messages: list[dict], sampling: Sampling, stats: CallStats | None = None, shape: Shape | None = None
    ) -> Completion:
        import openai
        from openai.types.chat import ChatCompletion

        stats = stats if stats is not None else CallStats()
        schema = shape.schema() if shape is not None and self.steers else None
        last: TeacherError | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt - 1))
            slot, down = None, False
            try:
                slot = await self.budget.acquire()
                url = self.endpoints[slot.endpoint][0]
                try:
                    started = time.perf_counter()
                    stats.calls += 1
                    try:
                        # What chat.completions.create() sends, posted as is: create() first walks the body
                        # against its typed schema, a third of the client's CPU a call, and changes nothing in a
                        # body of plain strings and numbers.
                        body = {
                            "model": self.model,
                            "messages": messages,
                            "temperature": sampling.temperature,
                            "top_p": sampling.top_p,
                            "max_tokens": sampling.max_tokens,
                            "seed": sampling.seed,
                            # No `n`: several servers ignore it (transformers serve logs so); one answer a
                            # request is all LabWeb ever asks for.
                        }
                        if schema is not None:
                            body |= ANSWER_FORMATS[self.answer_format](schema)
                        response = await self._client(slot.endpoint).post(
                            "/chat/completions", cast_to=ChatCompletion, body=body
                        )
                    finally:
                        stats.seconds += time.perf_counter() - started
                finally:
                    self.budget.release(slot)
            except TeacherError as exc:  # the shared budget could not be reached
                last = exc
            except openai.APITimeoutError:
                down = True
                last = TeacherError(
                    f"The teacher at {url} did not answer within {self.timeout:g} s.", unreachable=True, kind="timeout"
                )
            except openai.APIConnectionError as exc:
                down = True
                stats.calls -= 1  # no server saw it: counted among the errors only
                last = TeacherError(
                    f"Cannot reach the teacher at {url}: {exc.__cause__ or exc}. Check the "
                    "teacher's URL, or that its server is running.",
                    unreachable=True,
                )
            except openai.APIStatusError as exc:
                retryable = exc.status_code == 429 or exc.status_code >= 500
                down = exc.status_code >= 500
                reason = server_message(exc)
                last = TeacherError(
                    f"The teacher at {url} answered HTTP {exc.status_code}: {reason}",
                    retryable=retryable,
                    status=exc.status_code,
                    kind="server" if retryable else "refused",
                    endpoint=url,
                    reason=reason,
                )
                if not retryable:
                    stats.failed(last)
                    raise last from None
            except (ValueError, openai.APIResponseValidationError) as exc:
                last = TeacherError(
                    f"The teacher at {url} sent an answer that is not valid JSON ({str(exc)[:200]}).",
                    retryable=True,
                    kind="bad_answer",
                )
            else:
                try:
                    choice = response.choices[0]
                    text = choice.message.content
                except (AttributeError, IndexError, TypeError):
                    text = None
                if isinstance(text, str):
                    self.budget.endpoint_ok(slot.endpoint)
                    # A structured answer is written back in the text format; one that does not fit its schema
                    # (cut off, or the server ignored the schema) is read as text, as any other answer.
                    text = (shape.render(text) if schema is not None else None) or text
                    usage = response.usage
                    return Completion(
                        # PostgreSQL text cannot hold NUL; no prompt format of ours needs one.
                        text=text.replace("\x00", ""),
                        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                        finish_reason=getattr(choice, "finish_reason", None),
                    )
                last = TeacherError(
                    f"The teacher at {url} answered without message content.", retryable=True, kind="bad_answer"
                )
            stats.failed(last)
            if down:
                # No connection, a timeout, a 5xx: this endpoint is out for a while, and the next attempt goes
                # to another if the teacher has one that is up.
                self.budget.endpoint_failed(slot.endpoint, last.message)
        raise last or TeacherError("The teacher failed.")


def budget_name(model: str, urls: list[str]) -> str:
    """What the budget of a teacher is known by: its model on its endpoints, in order."""
    return "openai:" + model + ":" + " ".join(urls)


def server_message(exc) -> str:
    """The server's own reason for an error answer, whatever the shape of its body: OpenAI's
    `{"error": {"message": ...}}` (the client hands over the inner object), FastAPI's `{"detail": ...}` (a string,
    or a list of `{"loc", "msg"}`), `{"error": "..."}`, `{"message": ...}`, plain text, or an HTML error page (a
    proxy's, say: its text, without the markup)."""
    body = getattr(exc, "body", None)
    text = _body_text(body)
    if not text:
        response = getattr(exc, "response", None)
        try:
            text = (response.text or "").strip() if response is not None else ""
        except Exception:  # noqa: BLE001 - a body that cannot be read leaves the status alone
            text = ""
    if _HTML.match(text):
        text = _html_text(text)
    return (text or "no reason given (the answer's body was empty)").replace("\x00", "")[:500]


_HTML = re.compile(r"\s*<(!doctype\s+html|html|head|body|title|h1|center|p)\b", re.I)


_HIDDEN = {"head", "script", "style"}


class _HTMLText(HTMLParser):
    """The words a browser would show of an HTML page: no markup, no script or style, spaces collapsed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in _HIDDEN:
            self.hidden += 1

    def handle_endtag(self, tag):
        if tag in _HIDDEN and self.hidden:
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.words.extend(data.split())


def _html_text(page: str) -> str:
    parser = _HTMLText()
    parser.feed(page)
    parser.close()
    if not parser.words:  # all it says is in its <title>
        title = re.search(r"<title[^>]*>(.*?)</title>", page, re.I | re.S)
        return " ".join(unescape(title.group(1)).split()) if title else ""
    return " ".join(parser.words)


def _body_text(body) -> str:
    if isinstance(body, str):
        return body.strip()
    if isinstance(body, list):
        return "; ".join(filter(None, (_body_text(part) for part in body)))
    if not isinstance(body, dict):
        return ""
    for name in ("message", "detail", "error", "msg"):
        value = body.get(name)
        if isinstance(value, (str, list, dict)) and (text := _body_text(value)):
            if name == "msg" and body.get("loc"):
                return f"{'.'.join(map(str, body['loc']))}: {text}"
            return text
    return ""
