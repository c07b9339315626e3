"""A GGUF model (the embedded SmolLM2) as a Hugging Face folder, converted once and reused.

transformers de-quantizes a GGUF file tensor by tensor in Python each time it loads one; a folder of float32
safetensors loads in a fraction of that. Every phase that starts from the base model, and anything else that
loads it, reads the folder instead.
"""

import hashlib
import os
import shutil
from pathlib import Path


def hf_folder(model: str, gguf_file: str, cache: Path) -> Path | None:
    """The folder holding `gguf_file` of the local folder `model` as float32 weights and its tokenizer, made in
    `cache` on first use (named by the file's path, size and time, so a changed file is converted again);
    None when the file is not on this machine (a hub name: transformers fetches and reads it itself)."""
    source = Path(model) / gguf_file
    if not source.is_file():
        return None
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache / f"{source.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.trainer.run import _dequantized

    partial = cache / f"{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(model, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(model, gguf_file=gguf_file, dtype=torch.float32)
    _dequantized(loaded, gguf_file)
    loaded.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(folder)  # whole or not at all; another process may have made it meanwhile
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return folder
