"""Training jobs: phases that a Celery worker on a GPU machine runs with torchrun, and what they leave behind."""

from django.db import models

from labweb import jobs


class TrainingJob(jobs.Job):
    """A base model trained through one or more phases; each phase starts from the previous phase's last checkpoint."""

    class Plan(models.TextChoices):
        PHASED = "phased", "Knowledge, then skills (LAB)"
        STACKED = "stacked", "Everything in one phase"
        CUSTOM = "custom", "Phases as given"

    name = models.CharField(max_length=200)
    base_model = models.CharField(max_length=500, help_text="A model folder in Hugging Face format, or a hub name")
    gguf_file = models.CharField(max_length=500, blank=True)
    plan = models.CharField(max_length=16, choices=Plan.choices, default=Plan.CUSTOM)
    processes_per_node = models.PositiveIntegerField(default=1)
    nodes = models.PositiveIntegerField(default=1)
    output_dir = models.CharField(max_length=1000)

    class Meta(jobs.Job.Meta):
        pass

    def __str__(self) -> str:
        return self.name or f"Training job {self.pk}"


class TrainingPhase(jobs.Job, jobs.Sent):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="phases")
    order = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    recipe = models.TextField(help_text="InstructLab recipe YAML: the sources this phase mixes")
    config = models.JSONField(help_text="The trainer's settings for this phase (TrainConfig, less model and data)")
    data_path = models.CharField(max_length=1000, blank=True)
    data_sha256 = models.CharField(max_length=64, blank=True)
    data_samples = models.PositiveIntegerField(null=True, blank=True)
    data_sources = models.JSONField(
        default=list, blank=True, help_text="The recipe's sources as mixed: path, sha256 of its bytes, samples taken"
    )
    model_path = models.CharField(max_length=1000, blank=True, help_text="What this phase started from")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.PositiveIntegerField(default=0)
    samples_seen = models.PositiveIntegerField(default=0)
    exit_kind = models.CharField(
        max_length=32, blank=True, help_text="done, cancelled, bad_input, out_of_memory or crash"
    )
    events_offset = models.PositiveBigIntegerField(default=0, help_text="How far events.jsonl has been read")

    class Meta:
        ordering = ["job", "order"]
        constraints = [models.UniqueConstraint(fields=["job", "order"], name="unique_phase_order")]

    def __str__(self) -> str:
        return f"{self.job}: {self.name}"

    @property
    def output_dir(self) -> str:
        return f"{self.job.output_dir}/phase-{self.order}"

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0


class TrainingNode(jobs.Leased):
    """One node's torchrun of a phase: the worker that took the rank holds it under a lease it renews."""

    phase = models.ForeignKey(TrainingPhase, on_delete=models.CASCADE, related_name="nodes")
    rank = models.PositiveIntegerField()
    rendezvous = models.CharField(max_length=300, blank=True, help_text="host:port of the c10d store (rank 0)")
    pid = models.PositiveIntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["phase", "rank"]
        constraints = [models.UniqueConstraint(fields=["phase", "rank"], name="unique_phase_node_rank")]


class Checkpoint(models.Model):
    """A Hugging Face model folder a phase wrote, with its lineage: job, phase, data hash, recipe, settings."""

    phase = models.ForeignKey(TrainingPhase, on_delete=models.CASCADE, related_name="checkpoints")
    name = models.CharField(max_length=100)
    path = models.CharField(max_length=1000)
    step = models.PositiveIntegerField()
    epoch = models.PositiveIntegerField()
    samples_seen = models.PositiveIntegerField()
    lineage = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["phase", "step", "name"]
        constraints = [models.UniqueConstraint(fields=["phase", "name"], name="unique_checkpoint_name")]

    def __str__(self) -> str:
        return f"{self.phase} {self.name}"


class StepMetric(models.Model):
    phase = models.ForeignKey(TrainingPhase, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    epoch = models.PositiveIntegerField()
    loss = models.FloatField()
    learning_rate = models.FloatField()
    grad_norm = models.FloatField()
    tokens_per_second = models.FloatField()
    samples_per_second = models.FloatField()
    memory_mb = models.FloatField()

    class Meta:
        ordering = ["phase", "step"]
        constraints = [models.UniqueConstraint(fields=["phase", "step"], name="unique_phase_step")]

    def __str__(self) -> str:
        return f"step {self.step}: loss {self.loss:.4f}"


class TrainingEvent(jobs.Event):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="events")
    phase = models.ForeignKey(TrainingPhase, null=True, blank=True, on_delete=models.CASCADE, related_name="events")

    class Meta(jobs.Event.Meta):
        pass


class CheckpointPrompt(jobs.Job, jobs.Sent):
    """A question put to a checkpoint from the browser, answered by a training worker that loads it."""

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="prompts")
    prompt = models.TextField()
    answer = models.TextField(blank=True)
    seconds = models.FloatField(null=True, blank=True)

    class Meta(jobs.Job.Meta):
        pass

    def __str__(self) -> str:
        return self.prompt[:80]


class Dataset(jobs.Job, jobs.Leased, jobs.Sent):
    """A build of approved samples into the files a plan's phases train on, with what went where. The worker
    building it holds it under a lease (labweb.jobs), so a second message for it is dropped."""

    class Plan(models.TextChoices):
        PHASED = "phased", "Knowledge (simple, then complex), then skills"
        STACKED = "stacked", "Everything in one file"

    name = models.CharField(max_length=200)
    plan = models.CharField(max_length=16, choices=Plan.choices, default=Plan.PHASED)
    path = models.CharField(max_length=1000, blank=True, help_text="A leaf or branch of the taxonomy; blank: all")
    run = models.ForeignKey(
        "generation.GenerationRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kinds = models.JSONField(default=list, help_text="knowledge, skills; empty: both")
    seed = models.PositiveIntegerField(default=42)
    held_out_fraction = models.FloatField(default=0.1)
    complex_above_words = models.PositiveIntegerField(default=80, help_text="Longer knowledge answers are complex")
    system_prompt = models.TextField()
    tokenizer = models.CharField(max_length=500, help_text="Whose tokens the counts are in")
    folder = models.CharField(max_length=1000, blank=True)
    samples = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    per_leaf = models.JSONField(default=dict, help_text="leaf -> {file role: samples}")

    class Meta(jobs.Job.Meta):
        pass

    def __str__(self) -> str:
        return self.name or f"Dataset {self.pk}"


class DatasetFile(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="files")
    role = models.CharField(max_length=32)
    path = models.CharField(max_length=1000)  # its name in the training storage
    sha256 = models.CharField(max_length=64)
    samples = models.PositiveIntegerField()
    tokens = models.PositiveBigIntegerField()
    bytes = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["dataset", "role"]
        constraints = [models.UniqueConstraint(fields=["dataset", "role"], name="unique_dataset_file_role")]

    def __str__(self) -> str:
        return f"{self.dataset} {self.role}"

    @property
    def storage_path(self) -> str:
        """The name in the training storage, as a recipe names it."""
        from training.storage import storage_name

        return storage_name(self.path)


class DatasetFileTokens(models.Model):
    """The tokens of each sample of a build's file, in the file's order, as the build counted them with its
    dataset's tokenizer: a job's mix over the file is summed from them rather than tokenized again in a web
    request. Apart from DatasetFile, whose every read would carry them (4 bytes a sample)."""

    file = models.OneToOneField(DatasetFile, on_delete=models.CASCADE, related_name="sample_tokens")
    counts = models.BinaryField(help_text="One little-endian uint32 a sample, in file order")

    def __str__(self) -> str:
        return f"tokens of {self.file}"


class DatasetSample(models.Model):
    """Lineage: which sample went into which file of which build, with the text it had then."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="members")
    sample = models.ForeignKey("generation.Sample", on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=32)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "sample"], name="unique_dataset_sample")]

    def __str__(self) -> str:
        return f"{self.dataset}: sample {self.sample_id} in {self.role}"
