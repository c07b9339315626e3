"""What one training phase is asked to do, checked before any process starts.

The Django shell writes this as JSON for `python -m training.trainer --config FILE`; every refusal names its field.
"""

from dataclasses import asdict, dataclass, fields

from labweb.errors import LabError

SCHEDULERS = ("cosine", "linear", "constant")
# flash_attention_2 reads packed rows as variable-length sequences (GPU workers with flash-attn installed);
# sdpa gets a block-diagonal mask instead, and runs everywhere.
ATTENTION = ("sdpa", "flash_attention_2", "eager")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainConfig:
    model: str  # a folder in Hugging Face format, or a hub name the worker has cached
    data: tuple[str, ...]  # messages JSONL files, already mixed by the dataset build
    output_dir: str
    gguf_file: str | None = None  # a GGUF file inside `model` (the embedded SmolLM2)
    epochs: int = 1
    learning_rate: float = 2e-5
    scheduler: str = "cosine"
    warmup_steps: int = 0
    effective_batch_size: int = 8  # samples per optimizer step, over every process
    max_seq_len: int = 2048  # longer samples are dropped and counted, never cut
    max_tokens_per_device: int = 4096  # tokens one micro-batch packs on one device
    lora: LoraConfig | None = None
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    seed: int = 42
    save_every_samples: int = 0  # 0: a checkpoint at each epoch's end only
    fsdp: bool = False
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int = 0  # 0: as many as the epochs take
    attention: str = "sdpa"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        if not isinstance(raw, dict):
            raise LabError("The training configuration must be a mapping.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise LabError(f"Unknown setting {unknown[0]!r}.", field=unknown[0])
        values = dict(raw)
        if isinstance(values.get("data"), str):
            values["data"] = (values["data"],)
        if "data" in values:
            values["data"] = tuple(values["data"])
        if values.get("lora") is not None:
            lora = values["lora"]
            if not isinstance(lora, dict):
                raise LabError("LoRA settings must be a mapping (rank, alpha, dropout, target_modules).", field="lora")
            bad = sorted(set(lora) - {f.name for f in fields(LoraConfig)})
            if bad:
                raise LabError(f"Unknown LoRA setting {bad[0]!r}.", field=f"lora.{bad[0]}")
            if "target_modules" in lora:
                lora = {**lora, "target_modules": tuple(lora["target_modules"])}
            values["lora"] = LoraConfig(**lora)
        missing = [name for name in ("model", "data", "output_dir") if not values.get(name)]
        if missing:
            raise LabError(f"{missing[0]} is required.", field=missing[0])
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Refuse what cannot train, naming the field, before a GPU is reserved for it."""
        _typed(self)
        positive = ("epochs", "effective_batch_size", "max_seq_len", "max_tokens_per_device")
        for name in positive:
            if getattr(self, name) < 1:
                raise LabError(f"{name} must be at least 1.", field=name)
        for name in ("warmup_steps", "save_every_samples", "max_steps"):
            if getattr(self, name) < 0:
                raise LabError(f"{name} cannot be negative.", field=name)
        if not 0 < self.learning_rate < 1:
            raise LabError(
                "learning_rate must be between 0 and 1 (2e-5 is InstructLab's phase-1 value).", field="learning_rate"
            )
        if self.scheduler not in SCHEDULERS:
            raise LabError(f"scheduler must be one of {', '.join(SCHEDULERS)}.", field="scheduler")
        if self.attention not in ATTENTION:
            raise LabError(f"attention must be one of {', '.join(ATTENTION)}.", field="attention")
        if self.precision not in PRECISIONS:
            raise LabError(f"precision must be one of {', '.join(PRECISIONS)}.", field="precision")
        if self.max_tokens_per_device < self.max_seq_len:
            raise LabError(
                f"max_tokens_per_device ({self.max_tokens_per_device}) must hold at least one sample of "
                f"max_seq_len ({self.max_seq_len}) tokens.",
                field="max_tokens_per_device",
            )
        if self.max_grad_norm <= 0:
            raise LabError("max_grad_norm must be positive.", field="max_grad_norm")
        if self.lora is not None:
            for name in ("rank", "alpha"):
                if getattr(self.lora, name) < 1:
                    raise LabError(f"LoRA {name} must be at least 1.", field=f"lora.{name}")
            if not 0 <= self.lora.dropout < 1:
                raise LabError("LoRA dropout must be in [0, 1).", field="lora.dropout")
            if not self.lora.target_modules:
                raise LabError("LoRA needs at least one target module.", field="lora.target_modules")
            if self.fsdp:
                raise LabError("LoRA adapters are trained without FSDP here: turn one of them off.", field="fsdp")


def _typed(config) -> None:
    for f in fields(config):
        value = getattr(config, f.name)
        expected = {int: int, float: (int, float), str: str, bool: bool}.get(f.type)
        if expected is None:
            continue
        if not isinstance(value, expected) or (f.type is not bool and isinstance(value, bool)):
            wanted = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}[f.type]
            raise LabError(f"{f.name} must be {wanted}, not {value!r}.", field=f.name)
    for path in getattr(config, "data", ()):
        if not isinstance(path, str) or not path:
            raise LabError("data must list JSONL file paths.", field="data")
