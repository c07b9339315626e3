from django.conf import settings
from django.db import models
from django.db.models import Q

from curation.models import Leaf, TaxonomySnapshot
from labweb import jobs


class Teacher(models.Model):
    """A saved teacher configuration. The API key is write-only: no page, API response or log shows it."""

    class Backend(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible server"
        LOCAL = "local", "Local transformers model"

    class AnswerFormat(models.TextChoices):
        AUTO = "auto", "Find out (probe the server)"
        JSON_SCHEMA = "json_schema", "JSON schema (OpenAI response_format: vLLM, llama.cpp, Ollama, OpenAI)"
        VLLM = "vllm", "vLLM guided decoding (guided_json)"
        TEXT = "text", "Text formats only (the prompt states the format)"

    name = models.CharField(max_length=100, unique=True)
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.OPENAI)
    base_url = models.CharField(max_length=500, blank=True, help_text="e.g. http://gpu-box:8000/v1 (vLLM)")
    model = models.CharField(max_length=500, help_text="Model name the server knows, or a local path")
    gguf_file = models.CharField(max_length=500, blank=True, help_text="Local backend: a GGUF file inside `model`")
    api_key = models.CharField(max_length=500, blank=True)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=1.0)
    max_tokens = models.PositiveIntegerField(default=1024)
    max_concurrency = models.PositiveIntegerField(default=8)
    replicas = models.JSONField(
        default=list,
        blank=True,
        help_text='More servers of the same model beside base_url: [{"base_url": ..., "max_concurrency": ...}]',
    )
    timeout_seconds = models.FloatField(default=120.0)
    context_tokens = models.PositiveIntegerField(default=4096, help_text="The model's context length")
    answer_format = models.CharField(
        max_length=16,
        choices=AnswerFormat.choices,
        default=AnswerFormat.AUTO,
        help_text="How the server is asked for structured answers (a list of questions, a verdict)",
    )
    probed_format = models.CharField(
        max_length=16, blank=True, help_text="What the probe at creation found the server supports"
    )
    probe_note = models.TextField(blank=True, help_text="What the probe saw")
    sampling_note = models.TextField(
        blank=True, help_text="Set when the teacher answered requests differing in seed with identical text"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key)

    @property
    def effective_answer_format(self) -> str:
        """The format the teacher is asked for: the setting, or what the probe found (text when unknown)."""
        if self.backend == self.Backend.LOCAL:
            return self.AnswerFormat.TEXT  # the local backend steers its own decoding (teachers.Shape)
        if self.answer_format != self.AnswerFormat.AUTO:
            return self.answer_format
        return self.probed_format or self.AnswerFormat.TEXT

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """(URL, limit) of every server the teacher's calls go to: base_url first, then its replicas."""
        if self.backend != self.Backend.OPENAI:
            return []
        return [(self.base_url, self.max_concurrency)] + [
            (replica["base_url"], int(replica["max_concurrency"])) for replica in self.replicas or []
        ]

    @property
    def total_concurrency(self) -> int:
        return sum(limit for _, limit in self.endpoints) or self.max_concurrency

    def public_config(self) -> dict:
        """The configuration as lineage records it: everything but the key."""
        return {
            "name": self.name,
            "backend": self.backend,
            "base_url": self.base_url,
            "model": self.model,
            "gguf_file": self.gguf_file,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "max_concurrency": self.max_concurrency,
            "replicas": self.replicas,
            "timeout_seconds": self.timeout_seconds,
            "context_tokens": self.context_tokens,
            "answer_format": self.effective_answer_format,
        }


class RunStatus(models.TextChoices):
    """The statuses every job has (labweb.jobs.Status), and two of a run's own."""

    QUEUED = "queued"
    RUNNING = "running"
    # The teacher could not be reached: stopped with its error, to be resumed once it is back.
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    # Done, but some work items failed after their retries ("retry failed items" tries them again).
    PARTIAL = "partial", "Done with failed items"
    FAILED = "failed"
    CANCELLED = "cancelled"


class GenerationRun(jobs.Job):
    """A run of the pipelines over leaves of the taxonomy; its units of work are WorkItems. The job lifecycle
    (status, error, who and when) is the one every kind of job shares (labweb.jobs), with two statuses more."""

    Status = RunStatus
    FINISHED = (*jobs.FINISHED, RunStatus.PARTIAL)

    class Scope(models.TextChoices):
        ALL = "all", "Whole taxonomy"
        CHANGED = "changed", "Leaves changed since a baseline"
        SELECTED = "selected", "Chosen leaves"

    name = models.CharField(max_length=200, blank=True)
    teacher = models.ForeignKey(Teacher, on_delete=models.PROTECT, related_name="runs")
    teacher_config = models.JSONField(help_text="The teacher as it was when the run started (no key)")
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ALL)
    baseline = models.ForeignKey(TaxonomySnapshot, null=True, blank=True, on_delete=models.SET_NULL)
    samples_per_leaf = models.PositiveIntegerField(default=30)
    config = models.JSONField(default=dict, help_text="Pipeline configuration (PipelineConfig)")
    prompt_versions = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)

    class Meta(jobs.Job.Meta):
        pass

    def __str__(self) -> str:
        return self.name or f"Run {self.pk}"


# Work items that failed, or whose last try failed: the run page's list of errors (indexed: few, read often).
TROUBLED = Q(state="failed") | ~Q(error="")


class WorkItem(jobs.Leased):
    """One unit of a run (a seed example of a skills leaf, a chunk of a knowledge leaf), claimed with a lease."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="items")
    leaf = models.ForeignKey(Leaf, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    leaf_path = models.CharField(max_length=1000)
    leaf_hash = models.CharField(max_length=64, help_text="Content hash of the leaf the spec was taken from")
    kind = models.CharField(max_length=16)
    seed_index = models.PositiveIntegerField(null=True, blank=True)
    chunk_index = models.PositiveIntegerField(null=True, blank=True)
    unit = models.CharField(max_length=32, help_text='"seed N" or "chunk N" (0-based)')
    spec = models.JSONField(help_text="The leaf content and chunk this unit works from, frozen at run start")
    target = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task was sent; empty while no task is on its way to it"
    )
    failures = models.PositiveIntegerField(default=0, help_text="Attempts that failed since the last manual retry")
    retry_at = models.DateTimeField(null=True, blank=True, help_text="A failed item is tried again from then on")
    kept = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict)
    stats = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "leaf_path", "seed_index", "chunk_index"]
        # `unit` ("seed 3", "chunk 12") rather than the nullable indexes: SQLite has no NULLS NOT DISTINCT.
        constraints = [models.UniqueConstraint(fields=["run", "leaf_path", "unit"], name="unique_work_item_unit")]
        # A run's items by state (the unsettled ones, the failed ones, what is pending): without it every
        # progress read scans the run's items, wide with their frozen specs (100,000 at Merlinite scale).
        indexes = [
            models.Index(fields=["run", "state"], name="work_item_run_state"),
            # The run page's list of troubled items (failed, or that failed a try): few, read on every poll.
            models.Index(fields=["run", "id"], condition=TROUBLED, name="work_item_troubled"),
        ]

    def __str__(self) -> str:
        unit = f"seed {self.seed_index + 1}" if self.seed_index is not None else f"chunk {self.chunk_index + 1}"
        return f"{self.leaf_path} ({unit})"


class Sample(models.Model):
    """A synthetic sample with its full lineage: leaf, seeds, chunk, teacher, prompts, scores, raw output."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="samples")
    item = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="samples")
    leaf = models.ForeignKey(Leaf, null=True, blank=True, on_delete=models.SET_NULL, related_name="samples")
    leaf_path = models.CharField(max_length=1000, db_index=True)
    kind = models.CharField(max_length=16)
    question = models.TextField()
    response = models.TextField()
    context = models.TextField(null=True, blank=True)  # noqa: DJ001 - absent context differs from empty
    seed_indices = models.JSONField(default=list)
    chunk_index = models.PositiveIntegerField(null=True, blank=True)
    scores = models.JSONField(default=dict)
    rationales = models.JSONField(default=dict)
    raw = models.JSONField(default=dict)
    prompts = models.JSONField(default=list, help_text="name@version of every prompt used")
    steered_verdicts = models.JSONField(
        default=list,
        blank=True,
        help_text="The judges whose verdict LabWeb chose (the local teacher's steering), not the judge wrote",
    )
    teacher = models.ForeignKey(Teacher, null=True, on_delete=models.SET_NULL, related_name="+")
    teacher_model = models.CharField(max_length=500)
    duplicate_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A sample of another work item of the same leaf that this one nearly repeats (ROUGE-L)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["leaf_path", "idempotency_key"]

    def __str__(self) -> str:
        return self.question[:80]

    @property
    def verdict_steered(self) -> bool:
        return bool(self.steered_verdicts)


class TeacherResponse(models.Model):
    """The response cache: one teacher answer per (model, messages, sampling, seed)."""

    key = models.CharField(max_length=64, unique=True)
    model = models.CharField(max_length=500)
    text = models.TextField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=32, blank=True)
    steered = models.BooleanField(default=False, help_text="The verdict line was LabWeb's, not the teacher's")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class RunEvent(jobs.Event):
    """A line of a run's log: what started, finished or failed, and the teacher's error when it did."""

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="events")
    item = models.ForeignKey(WorkItem, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    leaf_path = models.CharField(max_length=1000, blank=True)

    class Meta(jobs.Event.Meta):
        pass


class RunCounter(models.Model):
    """A run-wide total kept as its items change (generation.services.counters): work items by state, their
    targets, kept samples, the teacher's counters and the stage counters of every item not running (a running
    item's are read live). `name` is "items", "target", "kept", "state:done", "stats:calls",
    "error_kinds:timeout", "counts:question_judge.accepted", ...; each name has a few rows (`shard`) so that
    workers finishing items at once do not queue on one row. A read sums them."""

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="counters")
    shard = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=200)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name", "shard"], name="unique_run_counter")]

    def __str__(self) -> str:
        return f"{self.run_id} {self.name}={self.value}"


class LeafCounter(models.Model):
    """A run's work items of one leaf, by state, with their targets and the samples kept by those not running,
    kept as the items change (generation.services.counters): the run page's per-leaf table without a scan of
    the run's items."""

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="leaf_counters")
    leaf_path = models.CharField(max_length=1000)
    kind = models.CharField(max_length=16)
    items = models.IntegerField(default=0)
    target = models.BigIntegerField(default=0)
    pending = models.IntegerField(default=0)
    running = models.IntegerField(default=0)
    done = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    cancelled = models.IntegerField(default=0)
    kept = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "leaf_path"], name="unique_leaf_counter")]

    def __str__(self) -> str:
        return f"{self.run_id} {self.leaf_path}"
