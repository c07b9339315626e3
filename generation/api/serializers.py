from dataclasses import asdict

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from curation.models import TaxonomySnapshot
from generation.models import GenerationRun, RunEvent, Sample, Teacher, WorkItem
from generation.selectors import LEAF_ROWS, run_percent, run_progress, teacher_endpoints
from generation.services.runs import run_teacher_changes
from generation.services.teachers import TEACHER_FIELDS


class ReplicaSerializer(serializers.Serializer):
    base_url = serializers.CharField(max_length=500)
    max_concurrency = serializers.IntegerField(min_value=1, max_value=1024, default=8)


class EndpointSerializer(serializers.Serializer):
    base_url = serializers.CharField()
    max_concurrency = serializers.IntegerField()
    in_flight = serializers.IntegerField(allow_null=True, help_text="Calls in flight now, over every worker")
    state = serializers.ChoiceField(choices=["up", "out", "unknown"], help_text="out: failed, tried again later")
    retry_in_seconds = serializers.FloatField(help_text="How long an endpoint that is out stays out")
    failures = serializers.IntegerField(help_text="Failures in a row")
    error = serializers.CharField(help_text="Its last error, while it fails")


class TeacherSerializer(serializers.ModelSerializer):
    """A teacher. `api_key` is write-only: send it to set, "" or null to remove, leave it out to keep.
    `replicas` are more servers of the same model; `endpoints` says how each server is doing."""

    api_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, allow_null=True, max_length=500, trim_whitespace=True
    )
    has_api_key = serializers.BooleanField(read_only=True)
    created_by = serializers.StringRelatedField(allow_null=True)
    replicas = ReplicaSerializer(many=True, required=False)
    endpoints = serializers.SerializerMethodField()

    class Meta:
        model = Teacher
        read_only_fields = [
            "id",
            "has_api_key",
            "probed_format",
            "probe_note",
            "sampling_note",
            "created_at",
            "created_by",
        ]
        fields = ["id", *TEACHER_FIELDS, "api_key", "endpoints", *read_only_fields[1:]]
        # The services decide what is allowed (a taken name included), so refusals have one wording.
        extra_kwargs = {"name": {"validators": []}}

    @extend_schema_field(EndpointSerializer(many=True))
    def get_endpoints(self, teacher: Teacher) -> list[dict]:
        return [asdict(endpoint) for endpoint in teacher_endpoints(teacher)]


class LeafProgressSerializer(serializers.Serializer):
    leaf_path = serializers.CharField()
    kind = serializers.CharField()
    items = serializers.IntegerField()
    pending = serializers.IntegerField()
    running = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    target = serializers.IntegerField()
    kept = serializers.IntegerField()
    percent = serializers.IntegerField()


class ItemErrorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    leaf_path = serializers.CharField()
    unit = serializers.CharField()
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    error = serializers.CharField()


class TeacherStatsSerializer(serializers.Serializer):
    calls = serializers.IntegerField()
    cached = serializers.IntegerField()
    retries = serializers.IntegerField()
    errors = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    same_answers = serializers.IntegerField(
        help_text="Answers identical to the answer of the same request with another seed (sampling ignored)"
    )


class RunProgressSerializer(serializers.Serializer):
    percent = serializers.IntegerField(help_text="Work items processed (done or failed) of all")
    items = serializers.IntegerField()
    states = serializers.DictField(child=serializers.IntegerField(), help_text="Work items per state")
    kept = serializers.IntegerField(help_text="Samples written so far")
    target = serializers.IntegerField()
    teacher = TeacherStatsSerializer()
    teacher_seconds = serializers.FloatField()
    per_kept_sample = serializers.DictField(
        child=serializers.FloatField(),
        allow_null=True,
        help_text='What a kept sample cost: {"calls": 3.17, "prompt_tokens": 234.0, "completion_tokens": 74.0}; '
        "null before the first",
    )
    error_kinds = serializers.DictField(
        child=serializers.IntegerField(),
        help_text='The failed teacher calls by kind: {"unreachable": 4, "refused": 1, "timeout": 0, ...}',
    )
    stages = serializers.SerializerMethodField(help_text='{"question_judge": {"accepted": 40, "rejected": 3}, ...}')
    leaves = serializers.SerializerMethodField(
        help_text=f"The first {LEAF_ROWS} leaves: failed ones, then in flight, waiting, done; "
        "every leaf: /api/runs/{id}/leaves/"
    )
    leaf_count = serializers.IntegerField(help_text="The run's leaves")
    errors = ItemErrorSerializer(many=True, help_text="The first failed work items, with the teacher's error")
    error_count = serializers.IntegerField()

    def get_stages(self, progress) -> dict[str, dict[str, int]]:
        return {stage.stage: stage.outcomes for stage in progress.stages}

    @extend_schema_field(LeafProgressSerializer(many=True))
    def get_leaves(self, progress) -> list[dict]:
        return LeafProgressSerializer(progress.leaves, many=True).data


class RunSerializer(serializers.ModelSerializer):
    """A run in a list: its totals come from `selectors.run_list()` annotations."""

    teacher_name = serializers.CharField(source="teacher.name", read_only=True)
    created_by = serializers.StringRelatedField(allow_null=True)
    is_active = serializers.BooleanField(read_only=True)
    items_total = serializers.IntegerField(read_only=True)
    items_done = serializers.IntegerField(read_only=True)
    items_failed = serializers.IntegerField(read_only=True)
    kept_total = serializers.IntegerField(read_only=True)
    target_total = serializers.IntegerField(read_only=True)
    percent = serializers.SerializerMethodField(help_text="Work items processed (done or failed) of all")

    class Meta:
        model = GenerationRun
        fields = [
            "id",
            "name",
            "status",
            "is_active",
            "teacher",
            "teacher_name",
            "scope",
            "baseline",
            "samples_per_leaf",
            "error",
            "created_at",
            "created_by",
            "started_at",
            "finished_at",
            "items_total",
            "items_done",
            "items_failed",
            "kept_total",
            "target_total",
            "percent",
        ]
        read_only_fields = fields

    def get_percent(self, run) -> int:
        return run_percent(run)


class RunDetailSerializer(serializers.ModelSerializer):
    teacher_name = serializers.CharField(source="teacher.name", read_only=True)
    created_by = serializers.StringRelatedField(allow_null=True)
    is_active = serializers.BooleanField(read_only=True)
    progress = serializers.SerializerMethodField()
    teacher_changes = serializers.SerializerMethodField(
        help_text="The teacher's settings that changed since the run recorded them, {name: [the run's, now]}: a "
        "run keeps its own; resume with `with_current_teacher` to use these for the remaining work"
    )

    class Meta:
        model = GenerationRun
        fields = [
            "id",
            "name",
            "status",
            "is_active",
            "teacher",
            "teacher_name",
            "teacher_config",
            "teacher_changes",
            "scope",
            "baseline",
            "samples_per_leaf",
            "config",
            "prompt_versions",
            "error",
            "created_at",
            "created_by",
            "started_at",
            "finished_at",
            "progress",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.ListField()))
    def get_teacher_changes(self, run) -> dict:
        return {name: list(change) for name, change in run_teacher_changes(run=run).items()}

    @extend_schema_field(RunProgressSerializer)
    def get_progress(self, run) -> dict:
        return RunProgressSerializer(run_progress(run, leaves=LEAF_ROWS)).data


class RunCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    teacher = serializers.PrimaryKeyRelatedField(queryset=Teacher.objects.all())
    scope = serializers.ChoiceField(choices=GenerationRun.Scope.choices, default=GenerationRun.Scope.ALL)
    baseline = serializers.PrimaryKeyRelatedField(
        queryset=TaxonomySnapshot.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text='For scope "changed"; default: the last import',
    )
    leaves = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, help_text='Leaf ids, for scope "selected"'
    )
    samples_per_leaf = serializers.IntegerField(default=30)
    config = serializers.DictField(
        required=False,
        default=dict,
        help_text="Pipeline settings: questions_per_call, max_rounds, pair_threshold, dedup_threshold, sampling, …",
    )


class RunResumeSerializer(serializers.Serializer):
    with_current_teacher = serializers.BooleanField(
        default=False,
        help_text="Use the teacher's settings as they are now for the remaining work (a run keeps its own)",
    )


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["id", "run", "item", "leaf_path", "level", "message", "created_at"]


class WorkItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkItem
        fields = [
            "id",
            "run",
            "leaf",
            "leaf_path",
            "leaf_hash",
            "kind",
            "seed_index",
            "chunk_index",
            "target",
            "state",
            "lease_owner",
            "lease_until",
            "attempts",
            "kept",
            "counts",
            "stats",
            "error",
            "started_at",
            "finished_at",
        ]


class WorkItemDetailSerializer(WorkItemSerializer):
    class Meta(WorkItemSerializer.Meta):
        fields = [*WorkItemSerializer.Meta.fields, "spec"]


class SampleSerializer(serializers.ModelSerializer):
    verdict_steered = serializers.BooleanField(
        read_only=True, help_text="Whether LabWeb chose a verdict of this sample (see steered_verdicts)"
    )

    class Meta:
        model = Sample
        fields = [
            "id",
            "run",
            "item",
            "leaf",
            "leaf_path",
            "kind",
            "question",
            "response",
            "context",
            "seed_indices",
            "chunk_index",
            "scores",
            "rationales",
            "steered_verdicts",
            "verdict_steered",
            "prompts",
            "teacher",
            "teacher_model",
            "duplicate_of",
            "created_at",
        ]


class SampleDetailSerializer(SampleSerializer):
    class Meta(SampleSerializer.Meta):
        fields = [*SampleSerializer.Meta.fields, "raw"]
