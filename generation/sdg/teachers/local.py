"""A transformers model in the worker process, which steers its own decoding into the answer's shape."""

import asyncio
import re
import threading
import time

from generation.sdg.teachers.base import CallStats, Completion, Sampling, Shape, TeacherError
from generation.sdg.teachers.limits import shared_limit


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
                        "Ollama) and use it for the run.",
                        kind="load",
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
        steered = bool(shape.choices) and not _has_verdict(text, shape)
        if steered:
            # The model gave reasons but no usable verdict line: end the answer with the line the prompt asks
            # for, taking the value the model itself finds most likely after its reasons. The verdict is then
            # LabWeb's choice (the Completion says so), and it must not accept what the judge argued against:
            # it is also asked for first, before any reasons, and where the two readings differ the stricter
            # one stands (choices run from the most rejecting to the most accepting).
            reasons = text.rstrip()
            lead = f"{reasons}\n{shape.verdict}" if reasons else shape.verdict
            choice = self._most_likely(tokenizer, model, prompt + lead, shape.choices)
            if reasons:
                first = self._most_likely(tokenizer, model, prompt + shape.verdict, shape.choices)
                choice = min(choice, first, key=shape.choices.index)
            text, hit_limit = lead + choice, False
            completion_tokens += len(tokenizer(lead[len(reasons) :] + choice, add_special_tokens=False)["input_ids"])
        return Completion(
            text=(shape.start + text).replace("\x00", ""),
            prompt_tokens=int(input_ids.shape[1]),
            completion_tokens=completion_tokens,
            finish_reason="length" if hit_limit else "stop",
            steered=steered,
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
            stats.calls += 1
            try:
                return await asyncio.to_thread(self._generate, messages, sampling, shape or Shape())
            finally:
                stats.seconds += time.perf_counter() - started


def _has_verdict(text: str, shape: Shape) -> bool:
    values = "|".join(re.escape(choice.strip()) for choice in shape.choices)
    return re.search(rf"{re.escape(shape.verdict)}\s*\**\s*(?:{values})\b", text, re.I) is not None
