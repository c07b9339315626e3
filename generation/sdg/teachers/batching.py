"""Batched decoding for the local teacher: every call in flight advances in one forward pass a token.

On a CPU a small model's decoding step is bound by reading its weights, so eight rows cost about what one
does. One thread per loaded model owns it: calls join the batch between steps (their prompts prefilled
together, left-padded, then merged into the running key-value cache) and leave it as soon as each stops
(its end token or its own token limit), so a short judge never waits for a long answer. Each row samples
with its own generator seeded from its call, and padding is masked with positions counted per row, so a
call answers the same alone or in a batch (greedy decoding exactly; sampling up to float rounding).

Two things keep a step's cost to what the rows need: the padding columns that no row attends to any more
(left by rows that have gone) are cut from the cache, and the key-value states of the last finished answers
are kept (`prefix_tokens` of them), so that scoring a continuation of an answer (a judge's verdict after its
reasons) computes only the tokens after the part it shares with one of them.
"""

import contextlib
import random
import threading
from collections import OrderedDict
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Generated:
    tokens: list[int]
    hit_limit: bool


@dataclass(eq=False)
class _Row:
    prompt: list[int]
    limit: int
    temperature: float
    top_p: float
    seed: int | None
    future: Future
    tokens: list[int] = field(default_factory=list)
    position: int = 0
    generator: torch.Generator | None = None


@dataclass(eq=False)
class _Score:
    context: list[int]
    continuations: list[list[int]]
    skips: list[int]
    future: Future


class BatchEngine:
    """Decodes the calls of one model in one batch; `generate` and `score` may be called from any thread."""

    def __init__(self, model, *, pad_id: int, stop_ids: set[int], max_batch: int = 8, prefix_tokens: int = 8192):
        self.model = model
        self.pad_id = pad_id
        self.stop_ids = stop_ids
        self.max_batch = max_batch
        self.prefix_tokens = prefix_tokens
        self.steps = 0  # forward passes made, prefills included (for the bench)
        self.widest = 0  # the most rows decoded in one step
        self.reused = 0  # context tokens a score took from a finished answer's states instead of computing them
        # The states of the last finished answers: their tokens -> per layer (keys, values), oldest first.
        self._finished: OrderedDict[tuple[int, ...], list[tuple]] = OrderedDict()
        self._cond = threading.Condition()
        self._waiting: list[_Row | _Score] = []
        self._thread: threading.Thread | None = None

    def generate(self, prompt: list[int], *, limit: int, temperature: float, top_p: float, seed: int | None) -> Future:
        """A future of `Generated`: up to `limit` tokens after `prompt`, greedy when temperature is 0."""
        row = _Row(prompt, max(1, limit), temperature, top_p, seed, Future())
        return self._submit(row)

    def score(self, context: list[int], continuations: list[list[int]], skips: list[int] | None = None) -> Future:
        """A future of each continuation's summed log-probability after `context`, leaving out its first
        `skips` tokens (which are scored as context, not counted); each continuation has a token counted."""
        return self._submit(_Score(context, continuations, skips or [0] * len(continuations), Future()))

    def _submit(self, job):
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="labweb-local-teacher", daemon=True)
                self._thread.start()
            self._waiting.append(job)
            self._cond.notify()
        return job.future

    # --- the model's thread -----------------------------------------------------------------------------

    def _serve(self) -> None:
        rows: list[_Row] = []
        cache = mask = None
        while True:
            with self._cond:
                while not self._waiting and not rows:
                    self._cond.wait()
                room = self.max_batch - len(rows)
                scores = [job for job in self._waiting if isinstance(job, _Score)]
                joining = [job for job in self._waiting if isinstance(job, _Row)][: max(0, room)]
                taken = {id(job) for job in (*scores, *joining)}
                self._waiting = [job for job in self._waiting if id(job) not in taken]
            with torch.inference_mode():
                for job in scores:
                    _settle(job.future, self._score, job)
                joining = [row for row in joining if not row.future.cancelled()]
                if joining:
                    try:
                        new_cache, new_mask, logits = self._prefill(joining)
                    except Exception as error:  # noqa: BLE001 - the calls that joined fail; the batch goes on
                        for row in joining:
                            _fail(row.future, error)
                    else:
                        kept = self._advance(joining, logits)
                        self._keep_finished(joining, kept, new_cache, new_mask)
                        if kept:
                            new_cache, new_mask = _select(new_cache, new_mask, joining, kept)
                            cache, mask = self._merge(cache, mask, new_cache, new_mask)
                            rows += kept
                if rows:
                    try:
                        logits, mask = self._step(rows, cache, mask)
                    except Exception as error:  # noqa: BLE001 - every row in the batch shared the failed step
                        for row in rows:
                            _fail(row.future, error)
                        rows, cache, mask = [], None, None
                        continue
                    kept = self._advance(rows, logits)
                    if len(kept) < len(rows):
                        self._keep_finished(rows, kept, cache, mask)
                        cache, mask = _trim(*_select(cache, mask, rows, kept)) if kept else (None, None)
                    rows = kept

    def _prefill(self, joining: list[_Row]):
        width = max(len(row.prompt) for row in joining)
        ids = torch.full((len(joining), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for index, row in enumerate(joining):
            ids[index, width - len(row.prompt) :] = torch.tensor(row.prompt)
            mask[index, width - len(row.prompt) :] = 1
            row.position = len(row.prompt)
            row.generator = torch.Generator().manual_seed(row.seed if row.seed is not None else random.getrandbits(62))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        device = self.model.device
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.steps += 1
        return cache, mask, out.logits[:, -1, :]

    def _step(self, rows: list[_Row], cache, mask):
        device = self.model.device
        tokens = torch.tensor([[row.tokens[-1]] for row in rows], device=device)
        positions = torch.tensor([[row.position] for row in rows], device=device)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
        self.widest = max(self.widest, len(rows))
        out = self.model(
            input_ids=tokens,
            attention_mask=mask.to(device),
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        self.steps += 1
        for row in rows:
            row.position += 1
        return out.logits[:, -1, :], mask

    def _advance(self, rows: list[_Row], logits) -> list[_Row]:
        """Each row's next token; the rows that go on (the others' futures are settled)."""
        going = []
        for row, row_logits in zip(rows, logits, strict=True):
            if row.future.cancelled():  # the call was given up: its row leaves the batch
                continue
            token = self._pick(row, row_logits)
            row.tokens.append(token)
            if token in self.stop_ids or len(row.tokens) >= row.limit:
                hit = token not in self.stop_ids
                _settle(row.future, lambda r=row, h=hit: Generated(list(r.tokens), h))
            else:
                going.append(row)
        return going

    def _pick(self, row: _Row, logits) -> int:
        logits = logits.float()
        if row.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / row.temperature, dim=-1)
        if row.top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            keep = (torch.cumsum(ordered, dim=-1) - ordered) < row.top_p  # the fewest tokens reaching top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _score(self, job: _Score) -> list[float]:
        # The shared context once (from where a finished answer's states leave off), then every continuation on
        # a copy of its cache.
        device = self.model.device
        cache, known = self._prefix(job.context)
        self.reused += known
        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        context = torch.tensor([job.context[known:]], device=device)
        hidden = decoder(
            input_ids=context,
            position_ids=torch.arange(known, len(job.context), device=device)[None],
            cache=cache,
            use_cache=True,
        ).last_hidden_state[0, -1]
        first = torch.log_softmax(head(hidden).float(), dim=-1)
        longest = max(len(c) for c in job.continuations)
        per_token = [[float(first[c[0]])] for c in job.continuations]
        if longest > 1:
            count = len(job.continuations)
            cache.batch_repeat_interleave(count)
            ids = torch.full((count, longest - 1), self.pad_id, dtype=torch.long)
            for index, c in enumerate(job.continuations):
                ids[index, : len(c) - 1] = torch.tensor(c[:-1])
            mask = torch.ones((count, len(job.context) + longest - 1), dtype=torch.long)
            positions = torch.arange(len(job.context), len(job.context) + longest - 1).expand(count, -1)
            after = decoder(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                cache=cache,
                use_cache=True,
            ).last_hidden_state
            logprobs = torch.log_softmax(head(after).float(), dim=-1)
            for index, c in enumerate(job.continuations):
                per_token[index] += [float(logprobs[index, n, token]) for n, token in enumerate(c[1:])]
        self.steps += 1
        return [sum(scores[skip:]) for scores, skip in zip(per_token, job.skips, strict=True)]

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _keep_finished(self, rows: list[_Row], kept: list[_Row], cache, mask) -> None:
        """Keep the states of the rows that finished (their prompt and every token fed back), padding cut off;
        the oldest go once the kept ones pass `prefix_tokens`."""
        if not self.prefix_tokens:
            return
        going = set(map(id, kept))
        for index, row in enumerate(rows):
            if id(row) in going or row.future.cancelled():
                continue
            start = int(mask[index].argmax())  # the first column the row attends to
            states = [
                (layer.keys[index : index + 1, :, start:].clone(), layer.values[index : index + 1, :, start:].clone())
                for layer in cache.layers
            ]
            tokens = tuple(row.prompt + row.tokens[:-1])  # the last token picked was never fed
            if states[0][0].shape[-2] != len(tokens):  # not the row's states: never reuse them
                continue
            self._finished.pop(tokens, None)
            self._finished[tokens] = states
        while sum(map(len, self._finished)) > self.prefix_tokens:
            self._finished.popitem(last=False)

    def _prefix(self, context: list[int]):
        """A cache holding the longest start of `context` that a finished answer's states cover (at most all but
        its last token, whose output is wanted), and that start's length; an empty cache and 0 without one."""
        from transformers import DynamicCache

        best, found = 0, None
        for tokens, states in self._finished.items():
            same = _common(tokens, context, len(context) - 1)
            if same > best:
                best, found = same, states
        if found is None:
            return self._new_cache(), 0
        layers = [(keys[:, :, :best], values[:, :, :best]) for keys, values in found]
        return DynamicCache(ddp_cache_data=layers, config=self.model.config), best

    def _merge(self, cache, mask, new_cache, new_mask):
        """The two batches as one: the shorter left-padded to the longer (masked, so never attended to)."""
        from transformers import DynamicCache

        if cache is None:
            return new_cache, new_mask
        width = max(mask.shape[1], new_mask.shape[1])
        layers = [
            tuple(
                torch.cat([_left(a, width), _left(b, width)])
                for a, b in ((old.keys, new.keys), (old.values, new.values))
            )
            for old, new in zip(cache.layers, new_cache.layers, strict=True)
        ]
        merged = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        return merged, torch.cat(
            [F.pad(mask, (width - mask.shape[1], 0)), F.pad(new_mask, (width - new_mask.shape[1], 0))]
        )


def _common(a, b, most: int) -> int:
    """How many tokens `a` and `b` share from their start, at most `most`."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if n >= most or x != y:
            break
        n += 1
    return n


def _trim(cache, mask):
    """The columns before the first one any row attends to cut off (padding of rows that have left)."""
    start = int(mask.any(dim=0).int().argmax())
    if start:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        mask = mask[:, start:]
    return cache, mask


def _left(states, width: int):
    return F.pad(states, (0, 0, width - states.shape[-2], 0))


def _select(cache, mask, rows: list[_Row], kept: list[_Row]):
    index = torch.tensor([rows.index(row) for row in kept])
    cache.batch_select_indices(index.to(cache.layers[0].keys.device))
    return cache, mask[index]


def _settle(future: Future, compute, *args) -> None:
    try:
        result = compute(*args)
    except Exception as error:  # noqa: BLE001 - handed to the caller, who decides
        _fail(future, error)
    else:
        with contextlib.suppress(InvalidStateError):  # the caller gave the call up meanwhile
            future.set_result(result)


def _fail(future: Future, error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)
