"""Evaluation jobs: a checkpoint (and its base beside it) answering each leaf's questions, judged and scored."""

from django.db import models

from evaluation.core.compare import VERDICTS
from labweb import jobs


class EvaluationJob(jobs.Job, jobs.Leased, jobs.Sent):
    """One evaluation of a model under test and its base, on a set of leaves; one worker holds it under a lease."""

    class Backend(models.TextChoices):
        LOCAL = "local", "Local transformers backend (on the training worker)"
        SERVER = "server", "OpenAI-compatible server (vLLM)"

    name = models.CharField(max_length=200, blank=True)
    checkpoint = models.ForeignKey(
        "training.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    training_job = models.ForeignKey(
        "training.TrainingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    phase = models.ForeignKey(
        "training.TrainingPhase", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    model = models.CharField(max_length=1000, help_text="The model under test: a folder, or the server's model name")
    model_gguf = models.CharField(max_length=500, blank=True, help_text="Local backend: a GGUF file inside `model`")
    base_model = models.CharField(max_length=1000, blank=True, help_text="The model it is compared with")
    base_gguf = models.CharField(max_length=500, blank=True, help_text="Local backend: a GGUF file inside `base_model`")
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.LOCAL)
    server_url = models.CharField(max_length=500, blank=True, help_text="Server backend: its /v1 URL")
    # Write-only, as a teacher's: sent as the bearer token, never shown back or logged.
    server_api_key = models.CharField(max_length=500, blank=True, help_text="Server backend: its API key")
    judge = models.ForeignKey("generation.Teacher", null=True, on_delete=models.SET_NULL, related_name="+")
    judge_config = models.JSONField(default=dict, help_text="The judge as it was (no API key)")
    dataset = models.ForeignKey(
        "training.Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    leaves = models.JSONField(default=list, help_text="Leaf paths evaluated")
    sets = models.JSONField(default=dict, help_text="Evaluation set name (the phase that trained it) -> leaf paths")
    thresholds = models.JSONField(default=dict)
    max_new_tokens = models.PositiveIntegerField(default=128)
    total = models.PositiveIntegerField(default=0, help_text="Measurements planned")
    done = models.PositiveIntegerField(default=0)
    stage = models.CharField(max_length=200, blank=True)

    class Meta(jobs.Job.Meta):
        pass

    def __str__(self) -> str:
        return self.name or f"Evaluation {self.pk}"

    @property
    def has_server_api_key(self) -> bool:
        return bool(self.server_api_key)

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


class Role(models.TextChoices):
    CHECKPOINT = "checkpoint"
    BASE = "base"


class Measurement(models.Model):
    """One question put to one model: its answer and the judge's rating, or its choice; saved as it comes, so a
    resumed job does only what is missing."""

    class Kind(models.TextChoices):
        JUDGED = "judged", "Judged answer"
        CHOICE = "choice", "Multiple choice"

    job = models.ForeignKey(EvaluationJob, on_delete=models.CASCADE, related_name="measurements")
    role = models.CharField(max_length=16, choices=Role.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    leaf_path = models.CharField(max_length=1000)
    key = models.CharField(max_length=100, help_text="seed-N, held-N, doc-N-M")
    question = models.TextField()
    reference = models.TextField(blank=True)
    choices = models.JSONField(default=list)
    correct = models.IntegerField(null=True, blank=True)
    answer = models.TextField(blank=True)
    answered = models.BooleanField(default=False)
    picked = models.IntegerField(null=True, blank=True)
    rating = models.FloatField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    judged = models.BooleanField(default=False, help_text="The judge answered (parseable or not)")
    parseable = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["leaf_path", "kind", "key", "role"]
        constraints = [
            models.UniqueConstraint(fields=["job", "role", "kind", "leaf_path", "key"], name="unique_measurement")
        ]
        indexes = [models.Index(fields=["job", "leaf_path"])]

    def __str__(self) -> str:
        return f"{self.leaf_path} {self.key} ({self.role})"


class LeafResult(models.Model):
    """Per leaf and job: both sides' measures and the verdict. `latest` marks, of the evaluations of the leaf
    that have finished, the newest (by creation, not by finish), which the taxonomy tree colours."""

    job = models.ForeignKey(EvaluationJob, on_delete=models.CASCADE, related_name="leaf_results")
    leaf = models.ForeignKey("curation.Leaf", null=True, on_delete=models.SET_NULL, related_name="+")
    leaf_path = models.CharField(max_length=1000)
    sets = models.JSONField(default=list, help_text="The evaluation sets this leaf belongs to")
    base_judge = models.FloatField(null=True)
    checkpoint_judge = models.FloatField(null=True)
    base_accuracy = models.FloatField(null=True)
    checkpoint_accuracy = models.FloatField(null=True)
    base_loss = models.FloatField(null=True)
    checkpoint_loss = models.FloatField(null=True)
    base_loss_tokens = models.PositiveIntegerField(default=0)
    checkpoint_loss_tokens = models.PositiveIntegerField(default=0)
    judged = models.PositiveIntegerField(default=0)
    unparseable = models.PositiveIntegerField(default=0)
    verdict = models.CharField(max_length=16, choices=[(v, v) for v in VERDICTS], blank=True)
    latest = models.BooleanField(default=False)

    class Meta:
        ordering = ["leaf_path"]
        constraints = [models.UniqueConstraint(fields=["job", "leaf_path"], name="unique_leaf_result")]
        indexes = [models.Index(fields=["leaf", "latest"])]

    def __str__(self) -> str:
        return f"{self.leaf_path}: {self.verdict or 'not measured yet'}"


class EvaluationEvent(jobs.Event):
    job = models.ForeignKey(EvaluationJob, on_delete=models.CASCADE, related_name="events")

    class Meta(jobs.Event.Meta):
        pass
