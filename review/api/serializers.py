from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from review.models import REASONS, VERDICTS, BulkEvent, BulkJob, Decision, ReviewItem
from review.queue import SORTS, STATE_CHOICES
from review.services import bulk


class DecisionSerializer(serializers.ModelSerializer):
    reviewer = serializers.StringRelatedField()

    class Meta:
        model = Decision
        fields = [
            "id",
            "item",
            "reviewer",
            "action",
            "reason",
            "note",
            "question_before",
            "question_after",
            "response_before",
            "response_after",
            "undoes",
            "job",
            "state_after",
            "created_at",
            "undoes_after",
            "undoes_through",
            "samples_after",
            "samples_through",
        ]
        read_only_fields = fields


class ReviewItemSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="sample_id", read_only=True)
    question = serializers.SerializerMethodField()
    edited = serializers.BooleanField(read_only=True)

    class Meta:
        model = ReviewItem
        fields = [
            "id",
            "run",
            "leaf_id",
            "leaf_path",
            "kind",
            "teacher_model",
            "score",
            "is_duplicate",
            "created_at",
            "state",
            "version",
            "required",
            "rule",
            "votes",
            "edited",
            "question",
            "decided_at",
            "claimed_until",
        ]
        read_only_fields = fields

    def get_question(self, item) -> str:
        return item.question if item.question is not None else item.sample.question


LIST_COLUMNS = tuple(
    "sample_id" if name == "id" else f"{name}_id" if name in ("run",) else name
    for name in ReviewItemSerializer.Meta.fields
    if name not in ("edited", "question")
) + ("question", "response")
_DATETIME = serializers.DateTimeField()


SAMPLE_QUESTION = "SELECT question FROM generation_sample WHERE generation_sample.id = review_reviewitem.sample_id"


def list_rows(rows: list[dict]) -> list[dict]:
    """What ReviewItemSerializer says of each row of a queue page, built from `LIST_COLUMNS` values and the
    sample's question as `sample_question`: the hot list skips model instances and per-field serializer calls
    (a test holds the two to the same output)."""
    out = []
    for row in rows:
        question = row["question"]
        out.append(
            {
                "id": row["sample_id"],
                "run": row["run_id"],
                "leaf_id": row["leaf_id"],
                "leaf_path": row["leaf_path"],
                "kind": row["kind"],
                "teacher_model": row["teacher_model"],
                "score": row["score"],
                "is_duplicate": row["is_duplicate"],
                "created_at": _DATETIME.to_representation(row["created_at"]),
                "state": row["state"],
                "version": row["version"],
                "required": row["required"],
                "rule": row["rule"],
                "votes": row["votes"],
                "edited": question is not None or row["response"] is not None,
                "question": question if question is not None else row["sample_question"],
                "decided_at": _DATETIME.to_representation(row["decided_at"]) if row["decided_at"] else None,
                "claimed_until": _DATETIME.to_representation(row["claimed_until"]) if row["claimed_until"] else None,
            }
        )
    return out


class ReviewItemDetailSerializer(ReviewItemSerializer):
    response = serializers.SerializerMethodField()
    original_question = serializers.CharField(source="sample.question", read_only=True)
    original_response = serializers.CharField(source="sample.response", read_only=True)
    context = serializers.CharField(source="sample.context", read_only=True, allow_null=True)
    scores = serializers.JSONField(source="sample.scores", read_only=True)
    rationales = serializers.JSONField(source="sample.rationales", read_only=True)
    prompts = serializers.JSONField(source="sample.prompts", read_only=True)
    duplicate_of = serializers.IntegerField(source="sample.duplicate_of_id", read_only=True, allow_null=True)
    seeds = serializers.SerializerMethodField()
    diff = serializers.SerializerMethodField()
    decision = DecisionSerializer(read_only=True, allow_null=True)

    class Meta(ReviewItemSerializer.Meta):
        fields = [
            *ReviewItemSerializer.Meta.fields,
            "response",
            "original_question",
            "original_response",
            "context",
            "scores",
            "rationales",
            "prompts",
            "duplicate_of",
            "seeds",
            "diff",
            "decision",
        ]
        read_only_fields = fields

    def get_response(self, item) -> str:
        return item.response if item.response is not None else item.sample.response

    def get_seeds(self, item) -> list[dict]:
        from review.selectors import seed_examples

        return seed_examples(item)

    @extend_schema_field(
        serializers.DictField(child=serializers.ListField(child=serializers.ListField()), allow_null=True)
    )
    def get_diff(self, item) -> dict | None:
        from review.selectors import item_diff

        diff = item_diff(item)
        return {name: [list(run) for run in runs] for name, runs in diff.items()} if diff else None


class DecideSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=VERDICTS)
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="For reject: " + ", ".join(code for code, _ in REASONS)
    )
    note = serializers.CharField(required=False, allow_blank=True, default="")
    version = serializers.IntegerField(required=False, help_text="The version you decided on (or send If-Match)")


class EditSerializer(serializers.Serializer):
    question = serializers.CharField(allow_blank=True, trim_whitespace=False)
    response = serializers.CharField(allow_blank=True, trim_whitespace=False)
    note = serializers.CharField(required=False, allow_blank=True, default="")
    version = serializers.IntegerField(required=False, help_text="The version you edited (or send If-Match)")


class UndoSerializer(serializers.Serializer):
    steps = serializers.IntegerField(default=1, help_text="How many of your last decisions to take back (1-100)")


class QueueSerializer(serializers.Serializer):
    """A queue filter, as the list takes it in its query string."""

    state = serializers.ChoiceField(choices=STATE_CHOICES, required=False)
    run = serializers.IntegerField(required=False)
    path = serializers.CharField(required=False, allow_blank=True, help_text="A leaf, or a branch: every leaf under it")
    teacher = serializers.CharField(required=False, allow_blank=True)
    kind = serializers.CharField(required=False, allow_blank=True)
    duplicate = serializers.ChoiceField(choices=["", "yes", "no"], required=False)
    score_min = serializers.FloatField(required=False)
    score_max = serializers.FloatField(required=False)
    q = serializers.CharField(required=False, allow_blank=True, help_text="Full-text search of question and answer")
    sort = serializers.ChoiceField(choices=list(SORTS), required=False)


class ClaimSerializer(serializers.Serializer):
    filters = QueueSerializer(required=False, default=dict)
    size = serializers.IntegerField(default=20)


class ClaimResultSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField())
    until = serializers.DateTimeField()


class BulkSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=VERDICTS)
    filters = QueueSerializer(required=False, default=dict)
    selected = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        default=list,
        help_text="Only these samples (else: all that match)",
    )
    excluded = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, help_text="All that match, minus these"
    )
    expected = serializers.IntegerField(required=False, help_text="The count the preview gave (required to start)")
    ceiling = serializers.IntegerField(required=False, help_text="The ceiling the preview gave")
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    note = serializers.CharField(required=False, allow_blank=True, default="")


class BulkPreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    ceiling = serializers.IntegerField()


class BulkEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = BulkEvent
        fields = ["level", "message", "created_at"]
        read_only_fields = fields


class BulkJobSerializer(serializers.ModelSerializer):
    reviewer = serializers.StringRelatedField()
    percent = serializers.IntegerField(read_only=True)
    events = serializers.SerializerMethodField(help_text=f"The job's log, newest first (at most {bulk.EVENTS_SHOWN})")

    @extend_schema_field(BulkEventSerializer(many=True))
    def get_events(self, job: BulkJob) -> list[dict]:
        return BulkEventSerializer(job.events.all()[: bulk.EVENTS_SHOWN], many=True).data

    class Meta:
        model = BulkJob
        fields = [
            "id",
            "reviewer",
            "action",
            "reason",
            "note",
            "filters",
            "selected",
            "excluded",
            "ceiling",
            "expected",
            "status",
            "done",
            "undone",
            "percent",
            "error",
            "attempts",
            "created_at",
            "finished_at",
            "undone_at",
            "events",
        ]
        read_only_fields = fields


class ProgressSerializer(serializers.Serializer):
    label = serializers.CharField()
    pending = serializers.IntegerField()
    approved = serializers.IntegerField()
    rejected = serializers.IntegerField()
    edited = serializers.IntegerField()
    decided = serializers.IntegerField()
    total = serializers.IntegerField()
    acceptance_rate = serializers.FloatField(allow_null=True)


class StatsSerializer(serializers.Serializer):
    total = ProgressSerializer()
    branches = ProgressSerializer(many=True)
    leaves = ProgressSerializer(many=True)


class LeafAgreementSerializer(serializers.Serializer):
    leaf_path = serializers.CharField()
    items = serializers.IntegerField()
    reviewers = serializers.IntegerField()
    measure = serializers.ChoiceField(choices=["cohen_kappa", "krippendorff_alpha"])
    value = serializers.FloatField(allow_null=True)


class PairAgreementSerializer(serializers.Serializer):
    reviewers = serializers.ListField(child=serializers.CharField())
    items = serializers.IntegerField()
    cohen_kappa = serializers.FloatField(allow_null=True)


class AgreementSerializer(serializers.Serializer):
    overall = serializers.FloatField(allow_null=True, help_text="Krippendorff's alpha over every sample")
    items = serializers.IntegerField()
    leaves = LeafAgreementSerializer(many=True)
    pairs = PairAgreementSerializer(many=True)
