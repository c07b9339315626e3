"""Finding out, once, whether a server holds its answers to a JSON schema (OpenAI's `response_format`)."""

import json
from dataclasses import dataclass

from generation.sdg.teachers.server import ANSWER_FORMATS, server_message

# A question any model answers in a word, and a schema that only a server holding it to the schema makes JSON:
# a server that ignores `response_format` answers "Yes." or the like.
QUESTION = [{"role": "user", "content": "Is two plus two four? Reply in one word."}]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["YES", "NO"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Probe:
    """`format`: "json_schema" or "text" when the probe could tell, "" when it could not (unreachable...)."""

    format: str
    note: str


def probe_answer_format(*, base_url: str, model: str, api_key: str = "", timeout: float = 10.0) -> Probe:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)
    body = {"model": model, "messages": QUESTION, "max_tokens": 16, "temperature": 0}
    try:
        try:
            content = _content(client, body | ANSWER_FORMATS["json_schema"](SCHEMA))
        except openai.APIStatusError as exc:
            if not 400 <= exc.status_code < 500:
                raise
            _content(client, body)  # is it the schema the server refuses, or the request itself?
            return Probe(
                "text",
                f"The server refused a JSON schema ({server_message(exc).rstrip('.')}); answers use the text formats.",
            )
    except openai.APITimeoutError:
        return Probe("", f"The server did not answer the probe within {timeout:g} s; answers use the text formats.")
    except openai.APIConnectionError as exc:
        return Probe("", f"Cannot reach the server to probe it ({exc.__cause__ or exc}); answers use the text formats.")
    except openai.APIStatusError as exc:
        return Probe("", f"The server refused the probe: HTTP {exc.status_code}: {server_message(exc).rstrip('.')}.")
    except (ValueError, openai.APIResponseValidationError):
        return Probe("", "The server answered the probe with something that is not an OpenAI chat completion.")
    try:
        data = json.loads(content or "")
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("answer") in ("YES", "NO"):
        return Probe(
            "json_schema",
            "The server held its answer to a JSON schema: judges and question lists are asked for structured answers.",
        )
    return Probe(
        "text",
        f"The server ignored the JSON schema (it answered {(content or '')[:60]!r}); answers use the text formats.",
    )


def _content(client, body: dict) -> str | None:
    from openai.types.chat import ChatCompletion

    response = client.post("/chat/completions", cast_to=ChatCompletion, body=body)
    try:
        return response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
