"""A transformers model in the worker process, which steers its own decoding into the answer's shape."""

import asyncio
import re
import threading
import time
from pathlib import Path

from generation.sdg.teachers.base import CallStats, Completion, Sampling, Shape, TeacherError
from generation.sdg.teachers.limits import shared_limit
from labweb.gguf import hf_folder


class LocalTeacher:
    """A transformers model in the worker process (small models and the embedded default).

    Every call of the process to one model goes into one batch (`batching.BatchEngine`): up to `max_batch`
    answers are decoded together, each joining and leaving between steps."""

    _loaded: dict[tuple, tuple] = {}
    _load_lock = threading.Lock()
    steers = True
    reasons_tokens = 96  # a judge's reasons before its verdict: enough to say why, short enough for a CPU
    max_batch = 8

    def __init__(
        self,
        *,
        model: str,
        gguf_file: str | None = None,
        max_concurrency: int = 0,
        device: str = "cpu",
        convert_into: Path | None = None,
    ):
        self.model = model if not gguf_file else f"{model}#{gguf_file}"
        self.path = model
        self.gguf_file = gguf_file
        # Where a GGUF file is converted once into a Hugging Face folder (labweb.gguf), which loads in a tenth of
        # a second instead of being de-quantized again by every process that loads it; None reads the GGUF.
        self.convert_into = convert_into
        self.device = device
        # The batch is the limit: more calls in flight would only wait in the engine, out of the deepest-first
        # order the concurrency limit keeps.
        self.max_concurrency = max_concurrency or self.max_batch
        self.limit = shared_limit(f"local:{self.model}", self.max_concurrency)

    def load(self):
        """(tokenizer, model, engine), loaded once per process."""
        key = (self.path, self.gguf_file, self.device, self.max_concurrency)
        with self._load_lock:
            if key not in self._loaded:
                try:
                    from transformers import AutoModelForCausalLM, AutoTokenizer

                    from generation.sdg.teachers.batching import BatchEngine

                    source, kwargs = self.path, {"gguf_file": self.gguf_file} if self.gguf_file else {}
                    folder = (
                        hf_folder(self.path, self.gguf_file, self.convert_into)
                        if kwargs and self.convert_into
                        else None
                    )
                    if folder is not None:
                        source, kwargs = str(folder), {}
                    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
                    model = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(self.device).eval()
                except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear message
                    raise TeacherError(
                        f"Cannot load the local teacher model {self.model!r}: {str(exc).rstrip('.')}. Install it "
                        "or point LabWeb at a server: add a teacher with an OpenAI-compatible URL (vLLM, llama.cpp, "
                        "Ollama) and use it for the run.",
                        kind="load",
                    ) from None
                stop = model.generation_config.eos_token_id
                stop_ids = set(stop if isinstance(stop, list) else [] if stop is None else [stop])
                pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
                engine = BatchEngine(model, pad_id=pad or 0, stop_ids=stop_ids, max_batch=self.max_concurrency)
                self._loaded[key] = (tokenizer, model, engine)
            return self._loaded[key]

    async def _generate(self, messages: list[dict], sampling: Sampling, shape: Shape) -> Completion:
        tokenizer, _, engine = await asyncio.to_thread(self.load)
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + shape.start
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        limit = min(sampling.max_tokens, self.reasons_tokens) if shape.choices else sampling.max_tokens
        temperature = sampling.temperature if sampling.temperature > 0 else 0.0
        generated = await asyncio.wrap_future(
            engine.generate(prompt_ids, limit=limit, temperature=temperature, top_p=sampling.top_p, seed=sampling.seed)
        )
        text = tokenizer.decode(generated.tokens, skip_special_tokens=True)
        hit_limit, completion_tokens = generated.hit_limit, len(generated.tokens)
        steered = bool(shape.choices) and not _has_verdict(text, shape)
        if steered:
            # The model gave reasons but no usable verdict line: end the answer with the line the prompt asks
            # for. The verdict is then LabWeb's choice (the Completion says so), and it must not accept what the
            # judge argued against: reasons with a word against the item get the most rejecting choice (choices
            # run from the most rejecting to the most accepting); otherwise the value the model itself finds most
            # likely after its reasons, and before any, where the two differ the stricter.
            reasons = text.rstrip()
            lead = f"{reasons}\n{shape.verdict}" if reasons else shape.verdict
            if reasons_reject(reasons):
                choice = shape.choices[0]
            else:
                choice = await self._most_likely(tokenizer, engine, prompt + lead, shape.choices)
            if reasons and choice != shape.choices[0]:
                first = await self._most_likely(tokenizer, engine, prompt + shape.verdict, shape.choices)
                choice = min(choice, first, key=shape.choices.index)
            text, hit_limit = lead + choice, False
            completion_tokens += len(tokenizer(lead[len(reasons) :] + choice, add_special_tokens=False)["input_ids"])
        return Completion(
            text=(shape.start + text).replace("\x00", ""),
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            finish_reason="length" if hit_limit else "stop",
            steered=steered,
        )

    async def _most_likely(self, tokenizer, engine, context: str, choices: tuple[str, ...]) -> str:
        base = tokenizer(context, add_special_tokens=False)["input_ids"]
        sequences = [tokenizer(context + choice, add_special_tokens=False)["input_ids"] for choice in choices]
        # A choice's own tokens start where its tokenisation parts from the context's (a merge may swallow a
        # space); the context the choices share is scored once.
        starts = [
            max(
                1,
                min(
                    next((n for n, (a, b) in enumerate(zip(base, ids, strict=False)) if a != b), len(base)),
                    len(ids) - 1,
                ),
            )
            for ids in sequences
        ]
        shared = min(starts)
        continuations = [ids[shared:] for ids in sequences]
        skips = [start - shared for start in starts]
        scores = await asyncio.wrap_future(engine.score(sequences[0][:shared], continuations, skips))
        return choices[scores.index(max(scores))]

    async def complete(
        self, messages: list[dict], sampling: Sampling, stats: CallStats | None = None, shape: Shape | None = None
    ) -> Completion:
        stats = stats if stats is not None else CallStats()
        async with self.limit:
            started = time.perf_counter()
            stats.calls += 1
            try:
                return await self._generate(messages, sampling, shape or Shape())
            finally:
                stats.seconds += time.perf_counter() - started


def _has_verdict(text: str, shape: Shape) -> bool:
    values = "|".join(re.escape(choice.strip()) for choice in shape.choices)
    return re.search(rf"{re.escape(shape.verdict)}\s*\**\s*(?:{values})\b", text, re.I) is not None


# Words a judge's reasons argue against an item with: a negation (also as a word-level tokenizer spells it,
# "doesn ' t"), or a fault it names. Read loosely on purpose ("nothing wrong" reads as against): a verdict
# LabWeb chooses errs towards rejecting, never towards keeping.
_AGAINST = re.compile(
    r"\b(?:not|no|never|nothing|none|nor|cannot|without|neither|unclear|vague|ambiguous|confus\w*|incorrect|wrong|"
    r"false|inaccura\w*|incomplete|irrelevant|unrelated|off-topic|nonsens\w*|meaningless|repeat\w*|repetitive|"
    r"duplicat\w*|copied|missing|lack\w*|fail\w*|poor\w*|bad|unhelpful|unsafe|harmful|unsupported|contradict\w*|"
    r"errors?|mistakes?|invalid|broken|garbled|truncated|unacceptable|reject\w*|insufficient|flaw\w*|"
    r"doesn|isn|aren|wasn|weren|didn|hasn|haven|shouldn)\b|n['\u2019]t\b",
    re.I,
)


def reasons_reject(reasons: str) -> bool:
    """Whether a judge's reasons say anything against the item (see _AGAINST)."""
    return _AGAINST.search(reasons) is not None
