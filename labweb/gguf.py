"""A GGUF model (the embedded SmolLM2) as a Hugging Face folder, converted once and reused.

transformers de-quantizes a GGUF file tensor by tensor in Python each time it loads one (about 20 s for the
135M model on two cores); a folder of float32 safetensors loads in a tenth of a second. The local teacher, every
training phase that starts from the base model, evaluations on the local backend, the chat playground and the
demo's set-up all read the folder, made once in `LABWEB_MODELS_DIR`. No Django here: the trainer imports it
under torchrun.
"""

import hashlib
import os
import shutil
import threading
from pathlib import Path

from labweb.errors import LabError


def converted_folder(model: str, gguf_file: str, cache: Path) -> Path | None:
    """Where `gguf_file` of the local folder `model` is (or will be) converted in `cache`: named by the file's
    path, size and time, so a changed file is converted again. None when the file is not on this machine."""
    source = Path(model) / gguf_file
    if not source.is_file():
        return None
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache / f"{source.stem}-{key}"


def hf_folder(model: str, gguf_file: str, cache: Path, *, make: bool = True) -> Path | None:
    """The folder holding `gguf_file` of the local folder `model` as float32 weights and its tokenizer, made in
    `cache` on first use (`converted_folder`); None when the file is not on this machine (a hub name:
    transformers fetches and reads it itself), or when the folder is not made yet and `make` is false (a web
    request reads the GGUF rather than wait for it)."""
    folder = converted_folder(model, gguf_file, cache)
    if folder is None:
        return None
    if (folder / "config.json").is_file():
        return folder
    if not make:
        return None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Per process and thread: two threads of one worker (or one web process) may convert the same file at once.
    partial = cache / f"{folder.name}.partial-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(model, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(model, gguf_file=gguf_file, dtype=torch.float32)
    dequantized(loaded, gguf_file)
    loaded.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(folder)  # whole or not at all; another process may have made it meanwhile
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def dequantized(model, gguf_file: str) -> None:
    """A model read from a GGUF file comes as plain float weights, but transformers keeps the GGUF quantizer on
    it, and save_pretrained refuses a quantized model: without it, its checkpoints are ordinary Hugging Face
    folders. Weights that stayed quantized cannot be trained or saved as they are."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if not all(parameter.is_floating_point() for parameter in model.parameters()):
        raise LabError(
            f"{gguf_file} loaded as quantized weights, which do not train; convert it to a Hugging Face folder.",
            field="gguf_file",
        )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
