"""The training program each torchrun process runs: one phase, from a model to HF-format checkpoints.

Accelerate holds the distribution (DDP or FSDP on GPUs, gloo on CPUs); the data plan is computed identically on
every rank, so ranks exchange gradients and one flag a step, nothing else. Resume continues from the last full
state (model, optimizer, scheduler, RNG, data position); SIGTERM (cancel) ends the step in progress, saves both a
checkpoint and the state, and exits 0 with a "cancelled" event. A phase that has trained every step keeps its
last checkpoint and only its position (marked finished): nothing is left to resume, so the optimizer's state (twice
the model's size) is not written, and a phase started again reports itself done at once.
"""

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from labweb.errors import LabError
from labweb.gguf import dequantized
from training.trainer.config import TrainConfig
from training.trainer.data import TokenizedData, data_fingerprint, packed_batch, plan_epoch, tokenize_files
from training.trainer.events import Events

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
CHECKPOINTS = "checkpoints"
STATE = "state"
POSITION = "trainer_state.json"
CHECKPOINT_INFO = "labweb_checkpoint.json"
STOP_FILE = "STOP"  # written by whoever wants the job to stop: the Celery task on cancel, or a person


@dataclass
class Position:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    samples_seen: int = 0
    finished: bool = False  # every step trained: the last checkpoint is the phase's result


class StopRequest:
    """A STOP file in the output folder, or SIGTERM/SIGINT to a trainer process; read once a step by every rank
    together, so that one rank asked is enough and all stop after the same step."""

    def __init__(self, output_dir: Path):
        self.file = output_dir / STOP_FILE
        self.signalled = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, *_):
        self.signalled = True

    @property
    def requested(self) -> bool:
        return self.signalled or self.file.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.trainer")
    parser.add_argument("--config", required=True, help="JSON file of a TrainConfig")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        raw = json.loads(Path(args.config).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        print(json.dumps({"event": "error", "kind": "bad_input", "message": f"{args.config}: {error}"}), flush=True)
        return EXIT_BAD_INPUT
    events = Events(raw.get("output_dir") or ".", enabled=rank == 0)
    try:
        return train(TrainConfig.from_dict(raw), events)
    except LabError as error:
        events.emit("error", kind="bad_input", **error.as_dict())
        return EXIT_BAD_INPUT
    except Exception as error:
        if out_of_memory(error):
            events.emit(
                "error",
                kind="out_of_memory",
                message=f"Out of memory: {error}. Lower "
                "max_tokens_per_device, turn on gradient_checkpointing or fsdp, or use more devices.",
            )
            return EXIT_OUT_OF_MEMORY
        events.emit(
            "error", kind="crash", message=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-4000:]
        )
        return 1


def out_of_memory(error: BaseException) -> bool:
    """A device out of memory (CUDA's own error), or the host: torch's CPU allocator raises a plain RuntimeError."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(error)


def train(config: TrainConfig, events: Events) -> int:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # bars drawn with carriage returns garble the job's log

    out = Path(config.output_dir)
    stop = StopRequest(out)
    accelerator = Accelerator(
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.precision],
        cpu=not torch.cuda.is_available(),
        **_fsdp(config),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(config.seed)

    tokenizer = AutoTokenizer.from_pretrained(config.model, gguf_file=config.gguf_file)
    data = _tokenized(config, tokenizer, accelerator, out)
    model = AutoModelForCausalLM.from_pretrained(
        config.model, gguf_file=config.gguf_file, dtype=torch.float32, attn_implementation=config.attention
    )
    if config.gguf_file:
        dequantized(model, config.gguf_file)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lora is not None:
        model = _with_lora(model, config)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    model, optimizer = accelerator.prepare(model, optimizer)

    steps_per_epoch = math.ceil(len(data) / config.effective_batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    scheduler = get_scheduler(
        "constant_with_warmup" if config.scheduler == "constant" else config.scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=total_steps,
    )
    accelerator.register_for_checkpointing(scheduler)
    position = _resume(accelerator, out)
    events.emit(
        "start",
        resumed_at=position.global_step,
        total_steps=total_steps,
        samples=len(data),
        dropped_too_long=data.dropped_too_long,
        tokens=int(data.lengths.sum()),
        processes=world,
        device=str(accelerator.device),
    )

    def save(name: str, *, last: bool = False) -> None:
        position.finished = last
        _save_checkpoint(accelerator, model, tokenizer, config, out / CHECKPOINTS / name, position, events)
        _save_state(accelerator, out, position, full=not last)

    while position.epoch < config.epochs and position.global_step < total_steps:
        plan = plan_epoch(
            data,
            epoch=position.epoch,
            seed=config.seed,
            batch_size=config.effective_batch_size,
            world_size=world,
            max_tokens=config.max_tokens_per_device,
        )
        while position.step_in_epoch < len(plan) and position.global_step < total_steps:
            step = plan[position.step_in_epoch]
            started = time.perf_counter()
            loss = _train_step(accelerator, model, data, step, rank, world)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            before = position.samples_seen
            position.step_in_epoch += 1
            position.global_step += 1
            position.samples_seen += step.samples
            seconds = time.perf_counter() - started
            tokens = sum(int(data.lengths[i]) for rank_batches in step.ranks for b in rank_batches for i in b)
            events.emit(
                "step",
                step=position.global_step,
                total_steps=total_steps,
                epoch=position.epoch + 1,
                loss=round(loss, 6),
                learning_rate=scheduler.get_last_lr()[0],
                grad_norm=round(float(grad_norm), 6),
                tokens_per_second=round(tokens / seconds, 1),
                samples_per_second=round(step.samples / seconds, 2),
                memory_mb=_memory_mb(),
                samples_seen=position.samples_seen,
            )
            every = config.save_every_samples
            if every and position.samples_seen // every > before // every:
                save(f"samples-{position.samples_seen:09d}")
            if _all_ranks_asked_to_stop(accelerator, stop):
                save(f"samples-{position.samples_seen:09d}")
                events.emit("cancelled", step=position.global_step)
                if accelerator.is_local_main_process:
                    stop.file.unlink(missing_ok=True)  # a resume starts afresh
                return 0
        if position.step_in_epoch >= len(plan):
            position.epoch += 1
            position.step_in_epoch = 0
            save(
                f"epoch-{position.epoch:03d}",
                last=position.epoch >= config.epochs or position.global_step >= total_steps,
            )
    if position.step_in_epoch and not position.finished:  # stopped by max_steps inside an epoch
        save(f"samples-{position.samples_seen:09d}", last=True)
    events.emit("done", step=position.global_step, samples_seen=position.samples_seen)
    accelerator.end_training()
    return 0


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position's prediction of the next token (0 where the next label is ignored)."""
    vocab = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape[0], -1)


def _train_step(accelerator, model, data: TokenizedData, step, rank: int, world: int) -> float:
    """Forward and backward over this rank's micro-batches; the mean loss per loss token over every rank.

    Each rank runs as many micro-batches as the busiest one (an idle rank runs an empty one) so that gradient
    synchronisation happens at the same call on every rank. Scaling by world/loss_tokens makes DDP's mean of
    gradients the gradient of the step's mean token loss, however the tokens fell between ranks.
    """
    mine = step.ranks[rank]
    total = torch.zeros((), dtype=torch.float64)
    for index in range(step.micro_batches):
        real = index < len(mine)
        batch = packed_batch(data, mine[index] if real else mine[-1][:1] if mine else [0])
        tensors = {key: torch.from_numpy(value).to(accelerator.device) for key, value in batch.items()}
        sync = index == step.micro_batches - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model), accelerator.autocast():
            logits = model(input_ids=tensors["input_ids"], position_ids=tensors["position_ids"], use_cache=False).logits
            loss_sum = token_losses(logits, tensors["labels"]).sum()
            scale = world / step.loss_tokens if real else 0.0
            accelerator.backward(loss_sum * scale)
        if real:
            total += loss_sum.detach().double().cpu()
    total = accelerator.reduce(total.to(accelerator.device), reduction="sum")
    return float(total) / step.loss_tokens


def _tokenized(config: TrainConfig, tokenizer, accelerator, out: Path) -> TokenizedData:
    """Tokenized once per node (the local main process), cached beside the output for every rank and resume."""
    cache = out / f"tokens-{data_fingerprint(config.data, config.model, config.max_seq_len)}.npz"
    if accelerator.is_local_main_process and not cache.exists():
        out.mkdir(parents=True, exist_ok=True)
        tokenize_files(tokenizer, config.data, config.max_seq_len).save(cache)
    accelerator.wait_for_everyone()
    return TokenizedData.load(cache)


def _resume(accelerator, out: Path) -> Position:
    state = out / STATE
    if not (state / POSITION).exists():
        return Position()
    position = Position(**json.loads((state / POSITION).read_text()))
    if not position.finished:
        accelerator.load_state(str(state))
    return position


def _save_state(accelerator, out: Path, position: Position, *, full: bool = True) -> None:
    """The full state (or, not `full`, the position alone), swapped in whole: a kill while saving leaves the
    previous state intact."""
    fresh, current, old = out / f"{STATE}.new", out / STATE, out / f"{STATE}.old"
    if accelerator.is_main_process:
        shutil.rmtree(fresh, ignore_errors=True)
    accelerator.wait_for_everyone()
    if full:
        accelerator.save_state(str(fresh))
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        fresh.mkdir(parents=True, exist_ok=True)
        (fresh / POSITION).write_text(json.dumps(position.__dict__))
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            current.rename(old)
        fresh.rename(current)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_checkpoint(accelerator, model, tokenizer, config, path: Path, position: Position, events) -> None:
    """A Hugging Face folder `AutoModelForCausalLM.from_pretrained` loads, with what made it beside the weights."""
    state_dict = accelerator.get_state_dict(model)  # every rank: FSDP gathers the shards here
    if accelerator.is_main_process:
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(partial, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        info = {"config": config.as_dict(), **position.__dict__}
        (partial / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2, default=list))
        shutil.rmtree(path, ignore_errors=True)
        partial.rename(path)
        events.emit(
            "checkpoint",
            path=str(path),
            name=path.name,
            step=position.global_step,
            epoch=position.epoch,
            samples_seen=position.samples_seen,
        )
    accelerator.wait_for_everyone()


def _all_ranks_asked_to_stop(accelerator, stop: StopRequest) -> bool:
    flag = torch.tensor(1.0 if stop.requested else 0.0, device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum") > 0)


def _fsdp(config: TrainConfig) -> dict:
    if not config.fsdp:
        return {}
    if not torch.cuda.is_available():
        raise LabError("FSDP shards a model over GPUs; this machine has none. Turn fsdp off.", field="fsdp")
    from accelerate.utils import FullyShardedDataParallelPlugin

    return {
        "fsdp_plugin": FullyShardedDataParallelPlugin(
            auto_wrap_policy="transformer_based_wrap",
            state_dict_type="FULL_STATE_DICT",
            activation_checkpointing=False,
        )
    }


def _with_lora(model, config: TrainConfig):
    try:
        from peft import LoraConfig as PeftLora
        from peft import get_peft_model
    except ImportError:
        raise LabError("LoRA needs the peft package on the training worker.", field="lora") from None
    lora = config.lora
    return get_peft_model(
        model,
        PeftLora(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )


def _memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
