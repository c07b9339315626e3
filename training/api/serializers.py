from rest_framework import serializers

from training.models import Checkpoint, Dataset, DatasetFile, StepMetric, TrainingEvent, TrainingJob, TrainingPhase
from training.selectors import phase_pace


class PhaseInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    recipe = serializers.CharField(help_text="InstructLab recipe YAML: datasets with path and sampling_size")
    config = serializers.DictField(required=False, help_text="Trainer settings: epochs, learning_rate, ...")


class JobCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    base_model = serializers.CharField(max_length=500)
    gguf_file = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    plan = serializers.ChoiceField(choices=TrainingJob.Plan.choices, default=TrainingJob.Plan.CUSTOM)
    processes_per_node = serializers.IntegerField(min_value=1, max_value=64, default=1)
    nodes = serializers.IntegerField(min_value=1, max_value=256, default=1)
    phases = PhaseInputSerializer(many=True)


class CheckpointSerializer(serializers.ModelSerializer):
    job = serializers.IntegerField(source="phase.job_id", read_only=True)
    phase_name = serializers.CharField(source="phase.name", read_only=True)

    class Meta:
        model = Checkpoint
        fields = [
            "id",
            "job",
            "phase",
            "phase_name",
            "name",
            "path",
            "step",
            "epoch",
            "samples_seen",
            "lineage",
            "created_at",
        ]


class PhaseSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)
    latest = serializers.SerializerMethodField()
    seconds_left = serializers.SerializerMethodField(help_text="While it runs: its remaining steps at its recent pace")

    class Meta:
        model = TrainingPhase
        fields = [
            "id",
            "order",
            "name",
            "status",
            "recipe",
            "config",
            "data_sha256",
            "data_samples",
            "data_sources",
            "model_path",
            "step",
            "total_steps",
            "percent",
            "epoch",
            "samples_seen",
            "exit_kind",
            "error",
            "started_at",
            "finished_at",
            "latest",
            "seconds_left",
        ]

    def pace(self, phase) -> tuple:
        """One query for both fields, per phase."""
        paces = self.__dict__.setdefault("_paces", {})
        if phase.pk not in paces:
            paces[phase.pk] = phase_pace(phase)
        return paces[phase.pk]

    def get_latest(self, phase) -> dict | None:
        metric = self.pace(phase)[0]
        return StepMetricSerializer(metric).data if metric else None

    def get_seconds_left(self, phase) -> float | None:
        left = self.pace(phase)[1]
        return round(left, 1) if left is not None else None


class JobSerializer(serializers.ModelSerializer):
    created_by = serializers.StringRelatedField()

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "name",
            "status",
            "base_model",
            "gguf_file",
            "plan",
            "processes_per_node",
            "nodes",
            "output_dir",
            "error",
            "created_at",
            "created_by",
            "started_at",
            "finished_at",
        ]


class JobDetailSerializer(JobSerializer):
    phases = PhaseSerializer(many=True, read_only=True)
    checkpoints = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "phases", "checkpoints"]

    def get_checkpoints(self, job) -> list[dict]:
        checkpoints = Checkpoint.objects.filter(phase__job=job).select_related("phase")
        return CheckpointSerializer(checkpoints, many=True).data


class StepMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepMetric
        fields = [
            "phase",
            "step",
            "epoch",
            "loss",
            "learning_rate",
            "grad_norm",
            "tokens_per_second",
            "samples_per_second",
            "memory_mb",
        ]


class TrainingEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingEvent
        fields = ["id", "phase", "level", "message", "created_at"]


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="Messages JSONL, as InstructLab writes it")


class UploadedSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="The path to name in a recipe")
    samples = serializers.IntegerField(required=False, help_text="Counted when the file is stored")
    bytes = serializers.IntegerField()


class DatasetFileSerializer(serializers.ModelSerializer):
    path = serializers.CharField(source="storage_path", read_only=True, help_text="As a recipe names it")

    class Meta:
        model = DatasetFile
        fields = ["role", "path", "sha256", "samples", "tokens", "bytes"]


class DatasetSerializer(serializers.ModelSerializer):
    files = DatasetFileSerializer(many=True, read_only=True)
    created_by = serializers.StringRelatedField()

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "status",
            "plan",
            "path",
            "run",
            "kinds",
            "seed",
            "held_out_fraction",
            "complex_above_words",
            "system_prompt",
            "tokenizer",
            "samples",
            "tokens",
            "per_leaf",
            "files",
            "error",
            "created_at",
            "created_by",
            "finished_at",
        ]
        read_only_fields = ["status", "samples", "tokens", "per_leaf", "error", "created_at", "finished_at"]
        extra_kwargs = {
            "system_prompt": {"required": False, "allow_blank": True},
            "tokenizer": {"required": False, "allow_blank": True},
        }


class MixSourceSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="As the recipe names it, in the training storage")
    sampling_size = serializers.FloatField(help_text="A fraction (float) or a count (integer), as in the recipe")
    available = serializers.IntegerField(help_text="Samples the source holds")
    samples = serializers.IntegerField(help_text="Samples the mix takes from it")
    tokens = serializers.IntegerField(allow_null=True, help_text="Their tokens; null where no tokenizer is at hand")


class MixLeafSerializer(serializers.Serializer):
    leaf = serializers.CharField(allow_blank=True, help_text="Blank: samples whose metadata names no leaf")
    samples = serializers.IntegerField()
    tokens = serializers.IntegerField(allow_null=True)


class MixPhaseSerializer(serializers.Serializer):
    name = serializers.CharField()
    samples = serializers.IntegerField()
    tokens = serializers.IntegerField(allow_null=True)
    sources = MixSourceSerializer(many=True)
    leaves = MixLeafSerializer(many=True)
