"""Training throughput on the CPU: padding-free packing against a plain padded batch loop, on the same samples.

Run: .venv/bin/python bench/bench_training.py [--samples 384] [--hidden 256] [--layers 4]

A random Mistral (no download) trains on samples whose lengths follow a long-tailed distribution like chat data
(median ~120 tokens, a few near the 1,024 limit). Both loops take the same samples in the same order, the same
number of samples per optimizer step, forward + backward + AdamW step. Tokens/s counts real tokens only; padding
waste is the share of positions in the padded tensors that are padding.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.trainer.data import TokenizedData, packed_batch, padded_batch, plan_epoch  # noqa: E402
from training.trainer.run import token_losses  # noqa: E402


def synthetic(samples: int, vocab: int, max_len: int, seed: int = 0) -> TokenizedData:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=np.log(120), sigma=0.8, size=samples), 16, max_len).astype(np.int32)
    tokens = rng.integers(4, vocab, size=int(lengths.sum()), dtype=np.int32)
    loss = np.ones(len(tokens), dtype=bool)
    starts = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)])
    return TokenizedData(tokens, loss, starts, lengths)


def model_of(hidden: int, layers: int, vocab: int):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        pad_token_id=0,
    )
    model = MistralForCausalLM(config)
    model.config.use_cache = False
    return model


def run(model, batches, loss_tokens: list[int]) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    started = time.perf_counter()
    for step, micro in enumerate(batches):
        for batch in micro:
            tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
            labels = tensors.pop("labels")
            logits = model(**tensors, use_cache=False).logits
            (token_losses(logits, labels).sum() / loss_tokens[step]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--batch", type=int, default=16, help="samples per optimizer step")
    parser.add_argument("--padded-micro", type=int, default=4, help="samples per padded micro-batch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    vocab = 8000
    data = synthetic(args.samples, vocab, args.max_len)
    plan = plan_epoch(data, epoch=0, seed=0, batch_size=args.batch, world_size=1, max_tokens=args.max_len)
    real = int(data.lengths.sum())

    packed = [[packed_batch(data, b) for b in step.ranks[0]] for step in plan]
    padded, positions = [], 0
    for step in plan:
        chosen = sorted(i for b in step.ranks[0] for i in b)
        micro = [
            padded_batch(data, chosen[k : k + args.padded_micro], 0) for k in range(0, len(chosen), args.padded_micro)
        ]
        positions += sum(m["input_ids"].size for m in micro)
        padded.append(micro)
    packed_positions = sum(b["input_ids"].size for step in packed for b in step)
    loss_tokens = [step.loss_tokens for step in plan]

    model = model_of(args.hidden, args.layers, vocab)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    run(model, packed[:1], loss_tokens)  # warm-up: allocator, kernels
    padded_seconds = run(model_of(args.hidden, args.layers, vocab), padded, loss_tokens)
    packed_seconds = run(model_of(args.hidden, args.layers, vocab), packed, loss_tokens)

    print(
        f"model: Mistral {args.layers} layers, hidden {args.hidden}, {params:.1f} M parameters; "
        f"{args.samples} samples, {real:,} tokens (median {int(np.median(data.lengths))}, max {data.lengths.max()}); "
        f"{len(plan)} steps of {args.batch}; {torch.get_num_threads()} threads"
    )
    print(f"{'loop':<44}{'seconds':>9}{'tokens/s':>11}{'padding':>9}{'vs baseline':>13}")
    print(
        f"{'baseline: padded, ' + str(args.padded_micro) + ' samples a micro-batch':<44}{padded_seconds:>9.2f}"
        f"{real / padded_seconds:>11,.0f}{1 - real / positions:>9.1%}{1.0:>12.2f}x"
    )
    print(
        f"{'packed, restarting positions (LabWeb)':<44}{packed_seconds:>9.2f}{real / packed_seconds:>11,.0f}"
        f"{1 - real / packed_positions:>9.1%}{padded_seconds / packed_seconds:>12.2f}x"
    )
    target = padded_seconds / packed_seconds >= 1.5
    print(f"target: packing at least 1.5x the padded loop -> {'met' if target else 'missed'}")


if __name__ == "__main__":
    main()
