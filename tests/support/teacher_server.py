"""A real HTTP server speaking the OpenAI chat-completions protocol, with scripted answers and faults.

It recognises LabWeb's prompts by their wording and answers each in the format the pipelines expect, with
text derived from a hash of the request (so the same request always gets the same answer). Faults are
switched on per server: latency, HTTP 500s, 429s, 400s, hanging requests (timeouts), garbage answers, bodies
cut off mid-JSON, NUL characters, unfaithful knowledge judgements, prompts that always fail, connections
dropped unanswered (a teacher out of reach), answers held back until released, and an API key required (as
`vllm serve --api-key` requires one). Every exchange is logged
(`script.exchanges`) so tests can check what the pipelines did with each answer.
"""

import hashlib
import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = (
    "river mountain violet engine harbor lantern orbit maple crystal thunder falcon velvet copper "
    "meadow signal quartz canyon ember glacier prism tundra cobalt sparrow willow nebula basalt "
    "saffron marble compass beacon juniper atlas cedar delta fjord garnet horizon ivory jasper kelp "
    "lagoon mosaic nimbus opal pebble quill raven sierra topaz umber vertex walnut yonder zephyr"
).split()


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


class TeacherScript:
    """What the server answers. Tests change these attributes while the server runs."""

    def __init__(self):
        self.latency = 0.0
        self.fail_every = 0  # every Nth request answers HTTP 500
        self.rate_limit_every = 0  # every Nth request answers HTTP 429
        self.hang_every = 0  # every Nth request never answers in time
        self.garbage_every = 0  # every Nth answer is not in the expected format
        self.reject_question_every = 0
        self.bad_request_every = 0  # every Nth request answers HTTP 400 (not worth retrying)
        self.broken_json_every = 0  # every Nth request answers HTTP 200 with a body cut off mid-JSON
        self.nul_every = 0  # every Nth answer carries a NUL character (small local models emit them)
        self.unfaithful_every = 0  # about one faithfulness judgement in N answers "NO" (chosen by request hash)
        self.junk_every = 0  # every Nth answer is control characters and mis-decoded bytes, not text
        self.cut_every = 0  # every Nth answer stops halfway, at the token limit (finish_reason "length")
        # Every Nth answer that is no verdict, the first of them included, keeps its format, but each line of text
        # in it carries junk bytes.
        self.junk_inside_every = 0
        self.texts = 0  # answers that were no verdict, for junk_inside_every
        self.fail_matching = ""  # every request whose prompt contains this answers HTTP 500
        self.unreachable = False  # every request (and the model list) has its connection closed unanswered
        self.hang_seconds = 30.0  # how long a hanging request hangs (cut short when the server stops)
        self.error_body: dict | str | None = None  # the body of a scripted 400 (a str goes as text/plain)
        self.error_content_type = ""  # the Content-Type of a scripted 400 with a str body, if not text/plain
        self.models_error: tuple[int, str] | None = None  # (status, HTML page) the model list answers instead
        self.pinned_model: str | None = None  # answer 400 with FastAPI's `detail` to any other model name
        # What the server does with OpenAI's `response_format` json_schema: "ignore" it (answer text, as
        # `transformers serve` does), "follow" it (answer JSON of the schema), or "refuse" it (HTTP 400).
        self.json_schema = "ignore"
        self.guided = False  # whether it follows vLLM's `guided_json` / `structured_outputs`
        self.same_answer = False  # answer the same text whatever the seed (a server that ignores sampling)
        # When set, every request (the model list too) must carry `Authorization: Bearer <api_key>`; any other
        # answers HTTP 401 with vLLM's body, before anything else is looked at.
        self.api_key: str | None = None
        self.bearers: list[str] = []  # the bearer token of every request, in order ("" when none was sent)
        self.gate = threading.Event()  # cleared by hold(): requests wait, unanswered, until release()
        self.gate.set()
        self.held: list[int] = []  # the numbers of the requests waiting at the gate now
        self.model = "scripted-teacher"
        self.replies: dict[tuple[str, str], str] = {}  # (model, prompt) -> the answer, before any other rule
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests = 0
        self.statuses: Counter = Counter()  # HTTP status -> how many requests got it
        self.exchanges: list[dict] = []  # {"number", "status", "model", "prompt", "text"} per request, in order
        self.requests_sent: list[dict] = []  # every chat-completions request body as it arrived, in order
        self.in_flight = 0
        self.max_in_flight = 0
        self.busy_seconds = 0.0

    def forget_requests(self) -> None:
        """Start the counts afresh (a test that counts a run's calls, after the probe of its teacher's creation)."""
        with self.lock:
            self.requests, self.max_in_flight, self.busy_seconds, self.texts = 0, 0, 0.0, 0
            self.statuses.clear()
            self.exchanges.clear()
            self.requests_sent.clear()

    def hold(self) -> None:
        """Answer nothing more until release(): requests that arrive meanwhile wait (and count as in flight)."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def answer(self, messages: list[dict], seed) -> str:
        prompt = messages[-1]["content"]
        seed = None if self.same_answer else seed
        rng = random.Random(hashlib.sha256(json.dumps([messages, seed]).encode()).hexdigest())
        count = int(m.group(1)) if (m := re.search(r"Write (\d+) new", prompt)) else 3
        if "Rate the assistant's answer" in prompt:
            return _judgement(prompt)
        if "[Context]" in prompt:
            return "\n".join(f"[Context]\nNotes about {_words(rng, 30)}.\n[End]" for _ in range(count))
        if "question-answer pairs" in prompt or "[Answer]" in prompt and "Passage:" in prompt:
            return "\n".join(
                f"[Question]\nWhat is the {_words(rng, 6)}?\n[Answer]\nIt is the {_words(rng, 12)}.\n[End]"
                for _ in range(count)
            )
        if "[Question]" in prompt and "Write" in prompt:
            return "\n".join(f"[Question]\nExplain the {_words(rng, 8)}.\n[End]" for _ in range(count))
        if "Is this instruction clear" in prompt:
            reject = self.reject_question_every and rng.randrange(self.reject_question_every) == 0
            return f"The instruction is {'unclear' if reject else 'clear'}.\nScore: {0 if reject else 1}"
        if "Rate the response" in prompt:
            return "Correct and complete.\nScore: 3"
        if "supported by the source" in prompt:
            if self.unfaithful_every and rng.randrange(self.unfaithful_every) == 0:
                return "The answer claims what the source does not say.\nAnswer: NO"
            return "Every claim appears in the source.\nAnswer: YES"
        if "address the question fully" in prompt:
            return "It answers directly.\nScore: 2"
        if "clear, specific question" in prompt:
            return "A good study question.\nScore: 1"
        return f"Here is a careful answer: {_words(rng, 40)}."


_VERDICT = re.compile(r"^(?:Score|Answer|Rating)\s*:", re.M)
_TEXT_LINE = re.compile(r"^(?!\[)(\S+) (.*)$", re.M)  # a line of words, not a [Tag] line: its first word, the rest


def _section(prompt: str, name: str) -> str:
    found = re.search(rf"\[{re.escape(name)}\]\n(.*?)(?:\n\n\[|\n\nGive a short rationale)", prompt, re.S)
    return found.group(1) if found else ""


def _judgement(prompt: str) -> str:
    """An evaluation judge: the rating grows with the share of the reference's words the answer has."""
    reference = set(_section(prompt, "Reference answer").lower().split())
    answer = set(_section(prompt, "The assistant's answer").lower().split())
    share = len(reference & answer) / len(reference) if reference else 0.0
    rating = 1 + round(9 * share)
    return f"The answer has {len(reference & answer)} of the reference's {len(reference)} words.\nRating: [[{rating}]]"


def structured(text: str, schema: dict) -> str:
    """The scripted text answer as the JSON a server held to `schema` (LabWeb's shapes, or its probe) writes."""
    properties = schema.get("properties", {})
    if set(properties) == {"answer"}:  # the probe
        return json.dumps({"answer": "YES"})
    if "reasons" in properties:
        (key,) = set(properties) - {"reasons"}
        found = re.findall(rf"{key}\s*:\s*(\w+)", text, re.I)
        value = found[-1] if found else ""
        value = int(value) if properties[key].get("type") == "integer" and value.isdigit() else value.upper()
        return json.dumps({"reasons": re.split(rf"\n\s*{key}\s*:", text, flags=re.I)[0].strip(), key: value})
    (key,) = properties
    tag = key[:-1].capitalize()
    bodies = re.findall(rf"\[{tag}\]\n(.*?)\n\[End\]", text, re.S)
    if properties[key]["items"].get("type") == "string":
        return json.dumps({key: bodies})
    pairs = [body.split("\n[Answer]\n", 1) for body in bodies]
    return json.dumps({key: [{"question": q, "answer": a} for q, a in pairs]})


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 drops connections at 32 requests in flight


class TeacherServer:
    def __init__(self, script: TeacherScript | None = None, port: int = 0):
        self.script = script or TeacherScript()
        handler = _make_handler(self.script)
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        # A short poll interval makes stopping the server quick (the default waits up to 0.5 s).
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def go_down(self) -> None:
        """What a replica that dies does: no new connection is taken, and open ones are dropped."""
        self.script.unreachable = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc):
        self.script.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(script: TeacherScript):
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # else every answer waits ~40 ms for the client's delayed ACK
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def handle(self):
            try:
                super().handle()
            except (ConnectionResetError, BrokenPipeError):
                pass  # the client went away between requests (a killed worker)

        counted = False  # whether this request is still in script.in_flight

        def _done(self) -> None:
            # Called under the lock, before the answer goes out: once the client has it, it may send its next
            # request, which must not find this one still counted in flight.
            if self.counted:
                self.counted = False
                script.in_flight -= 1

        def _drop(self) -> None:
            """Close the connection without an answer, as a server that went away does."""
            with script.lock:
                self._done()
            self.close_connection = True

        def _send(
            self,
            code: int,
            body: dict | str,
            *,
            number: int = 0,
            prompt: str = "",
            text: str = "",
            model: str = "",
            content_type: str = "",
        ) -> None:
            with script.lock:
                script.statuses[code] += 1
                if number:
                    script.exchanges.append(
                        {"number": number, "status": code, "model": model, "prompt": prompt, "text": text}
                    )
                self._done()
            data = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(code)
            plain = isinstance(body, str) and code >= 400
            self.send_header("Content-Type", content_type or ("text/plain" if plain else "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, text: str, *, number: int, prompt: str, model: str) -> None:
            """Server-sent events, a word a chunk, as a server does for `"stream": true`."""
            with script.lock:
                script.statuses[200] += 1
                script.exchanges.append(
                    {"number": number, "status": 200, "model": model, "prompt": prompt, "text": text}
                )
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            pieces = [word + " " for word in text.split(" ")]
            for index, piece in enumerate(pieces):
                delta = {"content": piece.rstrip() if index == len(pieces) - 1 else piece}
                chunk = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")

        def _refused_key(self) -> bool:
            """Answer 401 to a request without the key the script requires (True: it was answered)."""
            header = self.headers.get("Authorization") or ""
            bearer = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
            with script.lock:
                script.bearers.append(bearer)
            if script.api_key is None or bearer == script.api_key:
                return False
            self._send(401, {"error": "Unauthorized"})
            return True

        def do_GET(self):
            if script.unreachable:
                return self._drop()
            if self._refused_key():
                return None
            if script.models_error:
                status, page = script.models_error
                return self._send(status, page, content_type="text/html")
            self._send(200, {"object": "list", "data": [{"id": script.model, "object": "model"}]})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if script.unreachable:
                return self._drop()
            if self._refused_key():
                return None
            with script.lock:
                script.requests_sent.append(body)
                script.requests += 1
                number = script.requests
                script.in_flight += 1
                self.counted = True
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            started = time.perf_counter()
            messages = body.get("messages") or [{"content": ""}]
            prompt = messages[-1].get("content", "")
            model = body.get("model", "")
            try:
                if not script.gate.is_set():
                    with script.lock:
                        script.held.append(number)
                    script.gate.wait()
                    with script.lock:
                        script.held.remove(number)
                if script.unreachable:
                    return self._drop()
                if script.latency:
                    time.sleep(script.latency)
                if script.hang_every and number % script.hang_every == 0:
                    script.stopping.wait(script.hang_seconds)
                failing = script.fail_matching and script.fail_matching in prompt
                if failing or script.fail_every and number % script.fail_every == 0:
                    return self._send(
                        500,
                        {"error": {"message": "scripted internal error"}},
                        number=number,
                        prompt=prompt,
                        model=model,
                    )
                if script.rate_limit_every and number % script.rate_limit_every == 0:
                    return self._send(
                        429, {"error": {"message": "scripted rate limit"}}, number=number, prompt=prompt, model=model
                    )
                if script.pinned_model and model != script.pinned_model:
                    # What `transformers serve` answers when it serves one model and is asked for another.
                    detail = f"Server is pinned to {script.pinned_model!r}; requested {model!r}."
                    return self._send(400, {"detail": detail}, number=number, prompt=prompt, model=model)
                if script.bad_request_every and number % script.bad_request_every == 0:
                    body = script.error_body
                    if body is None:
                        body = {"error": {"message": "scripted bad request: this model does not accept that prompt"}}
                    return self._send(
                        400,
                        body,
                        number=number,
                        prompt=prompt,
                        model=model,
                        content_type=script.error_content_type if isinstance(body, str) else "",
                    )
                if script.broken_json_every and number % script.broken_json_every == 0:
                    return self._send(
                        200, '{"id": "chatcmpl-cut", "choices": [{"mess', number=number, prompt=prompt, model=model
                    )
                response_format = body.get("response_format") or {}
                schema = (response_format.get("json_schema") or {}).get("schema")
                if schema is not None and script.json_schema == "refuse":
                    return self._send(
                        400,
                        {"error": {"message": "response_format json_schema is not supported by this server"}},
                        number=number,
                        prompt=prompt,
                        model=model,
                    )
                if script.guided and body.get("guided_json"):
                    schema = body["guided_json"]
                elif script.json_schema != "follow":
                    schema = None
                text = script.replies.get((model, prompt)) or script.answer(body.get("messages", []), body.get("seed"))
                if schema is not None:
                    text = structured(text, schema)
                if body.get("stream"):
                    return self._stream(text, number=number, prompt=prompt, model=model)
                if script.garbage_every and number % script.garbage_every == 0:
                    text = "lorem ipsum, no format at all"
                if script.nul_every and number % script.nul_every == 0:
                    text = text.replace(" ", "\x00 ", 1) if " " in text else text + "\x00"
                finish_reason = "stop"
                if script.junk_every and number % script.junk_every == 0:
                    text = "\x07\x1b[0m\x01 Ã©Ã¨ \ufffd\ufffd"
                if script.junk_inside_every and not _VERDICT.search(text):
                    with script.lock:
                        script.texts += 1
                        spoil = (script.texts - 1) % script.junk_inside_every == 0
                    if spoil:
                        text = _TEXT_LINE.sub(lambda m: f"{m.group(1)} \x07\x1b[0m\u00c3\u00a9 {m.group(2)}", text)
                if script.cut_every and number % script.cut_every == 0:
                    text, finish_reason = text[: len(text) // 2], "length"
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{number}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", script.model),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": finish_reason,
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": {
                            "prompt_tokens": sum(len(m.get("content", "").split()) for m in body.get("messages", [])),
                            "completion_tokens": len(text.split()),
                            "total_tokens": 0,
                        },
                    },
                    number=number,
                    prompt=prompt,
                    text=text,
                    model=model,
                )
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout) before the answer came
            finally:
                with script.lock:
                    self._done()
                    script.busy_seconds += time.perf_counter() - started

    return Handler
