"""The model under test on the local transformers backend: greedy answers, the log-likelihood of each choice of a
multiple-choice question, and the loss on held-out samples, as the trainer computes it (assistant tokens only,
or the whole text for `unmask` samples)."""

import math
from dataclasses import dataclass

from labweb.errors import LabError

BATCH = 8


@dataclass
class Loss:
    total: float = 0.0  # summed negative log-likelihood, nats
    tokens: int = 0

    @property
    def mean(self) -> float | None:
        return self.total / self.tokens if self.tokens else None


class LocalModel:
    def __init__(self, path: str, *, gguf_file: str | None = None, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from training.trainer.data import ensure_chat_template

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(self.device).eval()
        except (OSError, ValueError) as error:
            raise LabError(f"Cannot load the model {path}: {error}", field="model") from None
        ensure_chat_template(self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def prompt(self, question: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )

    def answer(self, questions: list[str], *, max_new_tokens: int) -> list[str]:
        """Greedy answers, a batch at a time (left-padded, so every row's answer starts at the same column)."""
        import torch

        out = []
        self.tokenizer.padding_side = "left"
        for start in range(0, len(questions), BATCH):
            texts = [self.prompt(q) for q in questions[start : start + BATCH]]
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                generated = self.model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            width = encoded["input_ids"].shape[1]
            out += [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in generated]
        return out

    def choice_scores(self, question: str, choices: tuple[str, ...]) -> list[float]:
        """Mean log-probability per token of each choice after the question (length-normalised, so a long
        choice is not penalised for its length)."""
        import torch

        context = self.prompt(question)
        base = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in choices:
            ids = self.tokenizer(context + choice, add_special_tokens=False)["input_ids"]
            # The choice's tokens start where the two tokenisations part (a merge may swallow the join).
            shared = next((n for n, (a, b) in enumerate(zip(base, ids, strict=False)) if a != b), len(base))
            shared = max(1, min(shared, len(ids) - 1))
            with torch.inference_mode():
                logits = self.model(torch.tensor([ids], device=self.device)).logits[0, shared - 1 : -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(ids[shared:], device=self.device).unsqueeze(1)
            picked = logprobs.gather(1, targets).squeeze(1)
            scores.append(float(picked.mean()) if len(picked) else -math.inf)
        return scores

    def loss(self, samples: list[tuple[list[dict], bool]]) -> Loss:
        """Summed loss over (messages, unmask) samples, each scored alone."""
        import torch

        from training.trainer.data import tokenize

        result = Loss()
        for messages, unmask in samples:
            ids, mask = tokenize(self.tokenizer, messages, unmask)
            ids = ids[:4096]
            mask = mask[: len(ids)]
            labels = torch.tensor([i if m else -100 for i, m in zip(ids, mask, strict=True)], device=self.device)
            counted = int((labels[1:] != -100).sum())
            if not counted:
                continue
            with torch.inference_mode():
                logits = self.model(torch.tensor([ids], device=self.device)).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, labels[1:], ignore_index=-100, reduction="sum")
            result.total += float(nll)
            result.tokens += counted
        return result
