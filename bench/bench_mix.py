"""How long the training job form's "Show the mix" (training.services.mixes.job_mix, which the view calls in the
request) takes for a demo-sized source (7 samples) and a 10,000-sample one, on the embedded base model: its
tokenizer read from the GGUF file (no worker has converted it yet) and from the Hugging Face folder a worker makes
of it (`--converted`: made here first, once, in a temporary LABWEB_MODELS_DIR).

Run: .venv/bin/python bench/bench_mix.py [--converted]   (PostgreSQL by default, on a throw-away test database)
"""

import json
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _django import test_database

SIZES = (("demo", 7), ("big", 10_000))
WORDS = (
    "river mountain violet engine harbor lantern orbit maple crystal thunder falcon velvet copper meadow signal "
    "quartz canyon ember glacier prism tundra cobalt sparrow willow nebula basalt saffron marble compass beacon"
).split()


def record(rng: random.Random, n: int) -> dict:
    question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40))) + "?"
    answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 250))) + "."
    return {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "metadata": {"sample": n, "leaf": f"compositional_skills/bench/leaf_{n % 50}", "kind": "skills"},
        "unmask": False,
    }


def main() -> None:
    converted = "--converted" in sys.argv
    logging.disable(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-mix-"))
    with test_database():
        from django.conf import settings

        settings.LABWEB_TRAINING_DIR = str(root / "training")
        settings.LABWEB_MODELS_DIR = str(root / "models")
        from generation.services.teachers import resolve_local_model
        from training.services.datasets import token_counter
        from training.services.mixes import job_mix

        model = settings.LABWEB_DEFAULT_BASE_MODEL
        if converted:
            from labweb.gguf import hf_folder

            started = time.perf_counter()
            hf_folder(*resolve_local_model(model, ""), Path(settings.LABWEB_MODELS_DIR))
            print(f"converted the GGUF file once in {time.perf_counter() - started:.1f} s")
        uploads = root / "training" / "uploads"
        uploads.mkdir(parents=True)
        started = time.perf_counter()
        count_tokens = token_counter(model, local_files_only=True)
        print(f"tokenizer of {model} ({'converted folder' if converted else 'GGUF file'}) loaded in "
              f"{time.perf_counter() - started:.2f} s")  # fmt: skip
        rng = random.Random(0)
        for name, count in SIZES:
            records = [record(rng, n) for n in range(count)]
            lines = "".join(json.dumps(r) + "\n" for r in records)
            (uploads / f"{name}.jsonl").write_text(lines)
            built(root / "training", name, lines, [count_tokens(r) for r in records], model)

        for name, count in SIZES:
            for path in (f"uploads/{name}.jsonl", f"datasets/dataset-{name}/all.jsonl"):
                phase = {"name": "skills", "recipe": f"datasets:\n- path: {path}\n  sampling_size: 1.0\n"}
                times = []
                for _ in range(2):
                    started = time.perf_counter()
                    mix = job_mix(base_model=model, phases=[phase])
                    times.append(time.perf_counter() - started)
                print(
                    f"Show the mix, {path}, {count} samples ({mix[0]['tokens']} tokens): "
                    + ", ".join(f"{t:.2f} s" for t in times)
                )
    shutil.rmtree(root, ignore_errors=True)


def built(root: Path, name: str, lines: str, tokens: list[int], tokenizer: str) -> None:
    """What a dataset build leaves of a file: the file, its row, and each sample's count."""
    import hashlib

    import numpy as np

    from labweb import jobs
    from training.models import Dataset, DatasetFile, DatasetFileTokens

    folder = root / "datasets" / f"dataset-{name}"
    folder.mkdir(parents=True)
    (folder / "all.jsonl").write_text(lines)
    dataset = Dataset.objects.create(
        name=name, plan="stacked", tokenizer=tokenizer, status=jobs.Status.SUCCEEDED, folder=f"datasets/dataset-{name}"
    )
    file = DatasetFile.objects.create(
        dataset=dataset, role="all", path=f"datasets/dataset-{name}/all.jsonl", samples=len(tokens),
        sha256=hashlib.sha256(lines.encode()).hexdigest(), tokens=sum(tokens), bytes=len(lines.encode()),
    )  # fmt: skip
    DatasetFileTokens.objects.create(file=file, counts=np.asarray(tokens, dtype="<u4").tobytes())


if __name__ == "__main__":
    main()
