"""Training data: messages JSONL in, token ids with loss labels out, packed without padding.

A sample is `{"messages": [{"role", "content"}, ...]}` as InstructLab writes it; `"unmask": true` (knowledge)
trains on the whole text, otherwise only the assistant's tokens carry loss. Packed micro-batches are one row of
concatenated samples whose position ids restart at 0 for each: transformers then builds a block-diagonal causal
mask, so no sample attends to another and none is padded.
"""

import hashlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labweb.errors import LabError

ROLES = ("system", "user", "assistant")
# For a base model whose tokenizer has no chat template (Mistral-7B-v0.1): InstructLab's own turn markers.
LAB_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|user|>\n{{ message['content'] }}\n"
    "{% else %}<|assistant|>\n{{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def read_messages(path: str) -> Iterator[tuple[int, list[dict], bool]]:
    """(line number, messages, unmask) for each sample of a JSONL file; a bad line names its file, line, field."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise LabError(f"Not JSON: {error.msg}.", path=path, line=number) from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise LabError("A sample needs a non-empty list of messages.", path=path, line=number, field="messages")
            for index, message in enumerate(messages):
                where = f"messages[{index}]"
                if not isinstance(message, dict) or message.get("role") not in ROLES:
                    raise LabError(f"role must be one of {', '.join(ROLES)}.", path=path, line=number, field=where)
                if not isinstance(message.get("content"), str):
                    raise LabError("content must be text.", path=path, line=number, field=f"{where}.content")
            if not any(m["role"] == "assistant" for m in messages):
                raise LabError(
                    "A sample needs an assistant message to learn from.", path=path, line=number, field="messages"
                )
            yield number, messages, bool(record.get("unmask", False))


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = LAB_TEMPLATE


def tokenize(tokenizer, messages: list[dict], unmask: bool) -> tuple[list[int], list[bool]]:
    """Token ids of the conversation as the chat template renders it, and which of them carry loss."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if unmask:
        return ids, [True] * len(ids)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        end = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (text.startswith(start) and text.startswith(end)):
            raise LabError(
                "The tokenizer's chat template does not render a conversation turn by turn, so the "
                "assistant's tokens cannot be found.",
                field="model",
            )
        spans.append((len(start), len(end)))
    return ids, [any(a <= begin < b for a, b in spans) for begin, _ in offsets]


@dataclass
class TokenizedData:
    """Every sample's tokens in one flat array: sample i is tokens[starts[i]:starts[i] + lengths[i]]."""

    tokens: np.ndarray  # int32
    loss: np.ndarray  # bool, the same length
    starts: np.ndarray  # int64
    lengths: np.ndarray  # int32
    dropped_too_long: int = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, length = self.starts[index], self.lengths[index]
        return self.tokens[start : start + length], self.loss[start : start + length]

    def loss_tokens(self, index: int) -> int:
        """Tokens that carry loss. The first token of a sample predicts nothing (nothing comes before it)."""
        _, loss = self.sample(index)
        return int(loss[1:].sum())

    def save(self, path: Path) -> None:
        # Each node's local main writes the same file (on a shared filesystem, side by side): a name of its own
        # until the atomic rename, so that one node's rename never takes another's half-written file.
        tmp = path.with_name(f"{path.stem}.{socket.gethostname()}-{os.getpid()}.partial.npz")
        np.savez(
            tmp,
            tokens=self.tokens,
            loss=self.loss,
            starts=self.starts,
            lengths=self.lengths,
            dropped=np.array([self.dropped_too_long]),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "TokenizedData":
        with np.load(path) as data:
            return cls(data["tokens"], data["loss"], data["starts"], data["lengths"], int(data["dropped"][0]))


def tokenize_files(tokenizer, paths: Sequence[str], max_seq_len: int) -> TokenizedData:
    """Samples longer than `max_seq_len` are dropped and counted, never cut: a cut answer teaches a cut answer."""
    ensure_chat_template(tokenizer)
    chunks, masks, lengths, dropped = [], [], [], 0
    for path in paths:
        for _, messages, unmask in read_messages(path):
            ids, loss = tokenize(tokenizer, messages, unmask)
            if len(ids) > max_seq_len or sum(loss[1:]) == 0:
                dropped += 1
                continue
            chunks.append(np.asarray(ids, dtype=np.int32))
            masks.append(np.asarray(loss, dtype=bool))
            lengths.append(len(ids))
    if not lengths:
        raise LabError(f"No sample fits in max_seq_len={max_seq_len} tokens ({dropped} dropped).", field="data")
    lengths = np.asarray(lengths, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)])
    return TokenizedData(np.concatenate(chunks), np.concatenate(masks), starts, lengths, dropped)


def data_fingerprint(paths: Sequence[str], tokenizer_name: str, max_seq_len: int) -> str:
    digest = hashlib.sha256(f"{tokenizer_name}\0{max_seq_len}".encode())
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Step:
    """One optimizer step: for each rank the micro-batches it packs (lists of sample indices)."""

    ranks: tuple[tuple[tuple[int, ...], ...], ...]
    samples: int
    loss_tokens: int

    @property
    def micro_batches(self) -> int:
        return max(len(rank) for rank in self.ranks)


def plan_epoch(
    data: TokenizedData, *, epoch: int, seed: int, batch_size: int, world_size: int, max_tokens: int
) -> list[Step]:
    """The same plan on every rank (nothing is exchanged): shuffled per epoch, `batch_size` samples a step,
    shared between ranks by tokens, packed first-fit-decreasing into micro-batches of at most `max_tokens`."""
    order = np.random.default_rng([seed, epoch]).permutation(len(data))
    steps = []
    for first in range(0, len(order), batch_size):
        chosen = sorted(order[first : first + batch_size].tolist(), key=lambda i: (-int(data.lengths[i]), i))
        loads, shares = [0] * world_size, [[] for _ in range(world_size)]
        for index in chosen:
            rank = loads.index(min(loads))
            shares[rank].append(index)
            loads[rank] += int(data.lengths[index])
        ranks = tuple(tuple(tuple(b) for b in _pack(share, data.lengths, max_tokens)) for share in shares)
        steps.append(Step(ranks, len(chosen), sum(data.loss_tokens(i) for i in chosen)))
    return steps


def _pack(indices: list[int], lengths: np.ndarray, max_tokens: int) -> list[list[int]]:
    bins: list[list[int]] = []
    room: list[int] = []
    for index in indices:  # already longest first
        length = int(lengths[index])
        for b, free in enumerate(room):
            if length <= free:
                bins[b].append(index)
                room[b] -= length
                break
        else:
            bins.append([index])
            room.append(max_tokens - length)
    return bins


def packed_batch(data: TokenizedData, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """One row: input ids, labels (-100 where no loss, and at each sample's first token) and restarting positions."""
    ids, labels, positions = [], [], []
    for index in indices:
        tokens, loss = data.sample(index)
        sample_labels = np.where(loss, tokens, -100).astype(np.int64)
        sample_labels[0] = -100
        ids.append(tokens.astype(np.int64))
        labels.append(sample_labels)
        positions.append(np.arange(len(tokens), dtype=np.int64))
    return {
        "input_ids": np.concatenate(ids)[None, :],
        "labels": np.concatenate(labels)[None, :],
        "position_ids": np.concatenate(positions)[None, :],
    }


def padded_batch(data: TokenizedData, indices: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """The plain way, for the bench and the equivalence test: one row per sample, padded to the longest."""
    width = max(int(data.lengths[i]) for i in indices)
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    labels = np.full((len(indices), width), -100, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    for row, index in enumerate(indices):
        tokens, loss = data.sample(index)
        ids[row, : len(tokens)] = tokens
        labels[row, : len(tokens)] = np.where(loss, tokens, -100)
        labels[row, 0] = -100
        mask[row, : len(tokens)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
