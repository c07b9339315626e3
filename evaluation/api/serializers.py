from rest_framework import serializers

from evaluation.models import EvaluationEvent, EvaluationJob, LeafResult, Measurement
from generation.models import Teacher
from training.models import Checkpoint


class ThresholdsSerializer(serializers.Serializer):
    judge = serializers.FloatField(min_value=0, max_value=10, required=False, help_text="Mean rating points (1-10)")
    choice = serializers.FloatField(min_value=0, max_value=1, required=False, help_text="Multiple-choice accuracy")
    loss = serializers.FloatField(min_value=0, max_value=10, required=False, help_text="Held-out loss, nats/token")


class EvaluationCreateSerializer(serializers.Serializer):
    checkpoint = serializers.PrimaryKeyRelatedField(queryset=Checkpoint.objects.all(), required=False, allow_null=True)
    model = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    base_model = serializers.CharField(
        max_length=1000, required=False, allow_null=True, allow_blank=True, default=None,
        help_text="Omitted: the checkpoint's base model; empty: no base",
    )  # fmt: skip
    backend = serializers.ChoiceField(choices=EvaluationJob.Backend.choices, default=EvaluationJob.Backend.LOCAL)
    server_url = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    server_api_key = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default="", write_only=True, trim_whitespace=True,
        style={"input_type": "password"}, help_text="Server backend: its API key (write-only: never shown back)",
    )  # fmt: skip
    judge = serializers.PrimaryKeyRelatedField(queryset=Teacher.objects.all(), required=False, allow_null=True)
    leaves = serializers.ListField(
        child=serializers.CharField(max_length=1000), required=False, max_length=20000, default=list
    )
    thresholds = ThresholdsSerializer(required=False)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=4096, default=128)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class EvaluationSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)
    has_server_api_key = serializers.BooleanField(read_only=True)
    judge_name = serializers.SerializerMethodField()

    class Meta:
        model = EvaluationJob
        fields = [
            "id", "name", "status", "error", "stage", "done", "total", "percent", "checkpoint", "training_job",
            "phase", "model", "model_gguf", "base_model", "base_gguf", "backend", "server_url", "has_server_api_key",
            "judge", "judge_name", "dataset", "thresholds", "max_new_tokens", "created_at", "started_at", "finished_at",
        ]  # fmt: skip

    def get_judge_name(self, job: EvaluationJob) -> str:
        return job.judge_config.get("name", "")


class LeafResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = LeafResult
        fields = [
            "leaf_path", "leaf", "sets", "verdict", "base_judge", "checkpoint_judge", "base_accuracy",
            "checkpoint_accuracy", "base_loss", "checkpoint_loss", "judged", "unparseable", "latest",
        ]  # fmt: skip


class EvaluationDetailSerializer(EvaluationSerializer):
    sets = serializers.JSONField(read_only=True)
    leaves = serializers.JSONField(read_only=True)

    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "sets", "leaves"]


class MeasurementSerializer(serializers.ModelSerializer):
    class Meta:
        model = Measurement
        fields = [
            "id", "role", "kind", "leaf_path", "key", "question", "reference", "answer", "answered", "rating",
            "rationale", "judged", "parseable", "choices", "correct", "picked", "error",
        ]  # fmt: skip


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvaluationEvent
        fields = ["id", "level", "message", "created_at"]


class ComparisonRowSerializer(serializers.Serializer):
    leaf = serializers.CharField()
    first = LeafResultSerializer(allow_null=True)
    second = LeafResultSerializer(allow_null=True)
