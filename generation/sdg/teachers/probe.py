"""Asking a teacher whether it can work at all, before a run sends it anything."""

from generation.sdg.teachers.base import TeacherError
from generation.sdg.teachers.server import server_message

PROBE_TIMEOUT = 5.0


def probe(client, *, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise TeacherError when the teacher cannot work: `unreachable` when no answer comes at all.

    A local model is loaded (so a run on one that cannot load fails at once); a server is asked for its model
    list, which costs no tokens and takes no slot of its concurrency limit. Any answer but a refusal of the key
    or a server error says it is up (some servers have no model list: a 404 still says so). A teacher with
    replicas can work when any one of them is up; the error of the last is raised when none is.
    """
    if hasattr(client, "load"):
        client.load()
        return
    urls = [url for url, _ in getattr(client, "endpoints", ())] or [getattr(client, "base_url", "")]
    last = None
    for url in filter(None, urls):
        try:
            return _probe_server(url, getattr(client, "api_key", ""), timeout)
        except TeacherError as error:
            if not error.unreachable and not error.retryable:
                raise  # a refused key is refused by every replica alike
            last = error
    if last is not None:
        raise last


def _probe_server(base_url: str, api_key: str, timeout: float) -> None:
    import openai

    api = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)
    try:
        api.models.list()
    except openai.APITimeoutError:
        message = f"The teacher at {base_url} did not answer within {timeout:g} s."
        raise TeacherError(message, unreachable=True) from None
    except openai.APIConnectionError as error:
        raise TeacherError(
            f"Cannot reach the teacher at {base_url}: {error.__cause__ or error}. Check the teacher's URL, or that "
            "its server is running.",
            unreachable=True,
        ) from None
    except openai.APIStatusError as error:
        if error.status_code in (401, 403):
            raise TeacherError(
                f"The teacher at {base_url} refused the API key (HTTP {error.status_code}); set the right key on "
                "the teacher.",
                status=error.status_code,
            ) from None
        if error.status_code >= 500:
            raise TeacherError(
                f"The teacher at {base_url} answered HTTP {error.status_code}: {server_message(error)}",
                retryable=True,
                status=error.status_code,
            ) from None
    except (ValueError, openai.APIResponseValidationError):
        pass  # it answered, if not with a model list we understand: it is up
    finally:
        api.close()
