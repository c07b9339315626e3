from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from curation.models import (
    Document,
    ImportJob,
    Kind,
    Leaf,
    LeafRevision,
    SeedExample,
    TaxonomyImport,
    TaxonomySnapshot,
)
from curation.qna_map import EDITABLE_LEAF_FIELDS, SEED_FIELDS
from curation.services.imports import ImportPlan
from labweb.api import ErrorSerializer


class ProblemSerializer(serializers.Serializer):
    path = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()
    level = serializers.CharField()


class QAPairSerializer(serializers.Serializer):
    # As typed, like a seed's own question: the service refuses a whitespace-only one rather than blanking it.
    question = serializers.CharField(allow_blank=True, trim_whitespace=False)
    answer = serializers.CharField(allow_blank=True, trim_whitespace=False)


class SeedExampleSerializer(serializers.ModelSerializer):
    questions_and_answers = QAPairSerializer(many=True, required=False, allow_null=True)

    class Meta:
        model = SeedExample
        fields = ["id", "leaf", "position", *SEED_FIELDS]
        read_only_fields = ["id", "position"]


class SeedWriteSerializer(serializers.Serializer):
    context = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    question = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    answer = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    questions_and_answers = QAPairSerializer(many=True, required=False, allow_null=True)
    revision = serializers.IntegerField(required=False, help_text="The leaf revision you edited (or send If-Match)")


class SeedCreateSerializer(SeedWriteSerializer):
    leaf = serializers.PrimaryKeyRelatedField(queryset=Leaf.objects.all())
    position = serializers.IntegerField(required=False, min_value=0)


class MoveSeedSerializer(serializers.Serializer):
    position = serializers.IntegerField(min_value=0)
    revision = serializers.IntegerField(required=False)


class DocumentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Document
        fields = ["id", "leaf", "name", "size", "sha256", "created_at"]


class DocumentDetailSerializer(DocumentSerializer):
    class Meta(DocumentSerializer.Meta):
        fields = [*DocumentSerializer.Meta.fields, "content"]


class DocumentCreateSerializer(serializers.Serializer):
    leaf = serializers.PrimaryKeyRelatedField(queryset=Leaf.objects.all())
    file = serializers.FileField(required=False, help_text="A Markdown file; or give name and content")
    name = serializers.CharField(required=False)
    content = serializers.CharField(required=False, trim_whitespace=False)
    revision = serializers.IntegerField(required=False)

    def validate(self, attrs):
        if "file" not in attrs and not ("name" in attrs and "content" in attrs):
            raise serializers.ValidationError("Send a file, or a name and content.")
        return attrs


class LeafSerializer(serializers.ModelSerializer):
    problems = ProblemSerializer(many=True, read_only=True)
    seed_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Leaf
        fields = [
            "id",
            "path",
            "kind",
            *EDITABLE_LEAF_FIELDS,
            "is_valid",
            "problems",
            "content_hash",
            "revision",
            "seed_count",
            "updated_at",
        ]
        read_only_fields = fields


class LeafDetailSerializer(LeafSerializer):
    seeds = SeedExampleSerializer(many=True, read_only=True)
    documents = DocumentSerializer(many=True, read_only=True)

    class Meta(LeafSerializer.Meta):
        fields = [*LeafSerializer.Meta.fields, "seeds", "documents"]
        read_only_fields = fields


class LeafWriteSerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    created_by = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    task_description = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    domain = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    document_outline = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    document_repo = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    document_commit = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    document_patterns = serializers.ListField(child=serializers.CharField(), required=False, allow_null=True)
    attribution = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    revision = serializers.IntegerField(required=False, help_text="The revision you edited (or send If-Match)")


assert set(LeafWriteSerializer._declared_fields) == {*EDITABLE_LEAF_FIELDS, "revision"}
assert set(SeedWriteSerializer._declared_fields) == {*SEED_FIELDS, "revision"}


class LeafCreateSerializer(LeafWriteSerializer):
    path = serializers.CharField(
        help_text="Folder path under knowledge/, foundational_skills/ or compositional_skills/"
    )


class MoveLeafSerializer(serializers.Serializer):
    path = serializers.CharField()
    revision = serializers.IntegerField(required=False)


class RevisionSerializer(serializers.ModelSerializer):
    author = serializers.StringRelatedField()

    class Meta:
        model = LeafRevision
        fields = ["id", "number", "path", "action", "author", "created_at", "changes", "content_hash"]


class RevisionDetailSerializer(RevisionSerializer):
    class Meta(RevisionSerializer.Meta):
        fields = [*RevisionSerializer.Meta.fields, "snapshot"]


class SnapshotSerializer(serializers.ModelSerializer):
    created_by = serializers.StringRelatedField()
    leaves = serializers.SerializerMethodField()

    class Meta:
        model = TaxonomySnapshot
        fields = ["id", "name", "created_at", "created_by", "leaves"]
        read_only_fields = ["id", "created_at", "created_by", "leaves"]

    def get_leaves(self, snapshot) -> int:
        return len(snapshot.hashes)


class ImportSerializer(serializers.ModelSerializer):
    created_by = serializers.StringRelatedField()
    problems = ProblemSerializer(many=True)

    class Meta:
        model = TaxonomyImport
        fields = [
            "id",
            "source",
            "status",
            "message",
            "created_at",
            "created_by",
            "files_seen",
            "created",
            "updated",
            "unchanged",
            "removed",
            "rejected",
            "problems",
            "snapshot",
            "duration_ms",
        ]


class ImportJobSerializer(serializers.ModelSerializer):
    """An import (or dry run) as a job: its progress while it runs, then its result: the import's record, or a
    dry run's plan, or the error of a job that ended without either."""

    url = serializers.SerializerMethodField()
    created_by = serializers.StringRelatedField()
    problems = ProblemSerializer(many=True)
    source = serializers.CharField(source="label")
    stage = serializers.ChoiceField(choices=ImportJob.Stage.choices)
    # The import's record once it is written (null before, and for a dry run).
    import_record = ImportSerializer(source="record", allow_null=True)
    plan = serializers.SerializerMethodField()

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "url",
            "status",
            "stage",
            "source",
            "dry_run",
            "prune",
            "allow_remove_all",
            "created_at",
            "created_by",
            "started_at",
            "finished_at",
            "attempts",
            "files_read",
            "leaves_total",
            "leaves_validated",
            "leaves_written",
            "error",
            "problems",
            "import_record",
            "plan",
        ]

    def get_url(self, job) -> str:
        return reverse("import-job-detail", args=[job.pk], request=self.context.get("request"))

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_plan(self, job) -> dict | None:
        """A finished dry run: what the import would create, update and remove (removed_paths)."""
        return ImportPlan(**job.plan).as_dict() if job.plan else None


class ImportCreateSerializer(serializers.Serializer):
    archive = serializers.FileField(
        required=False, help_text=".tar.gz, .tgz, .tar, .tar.bz2, .tar.xz or .zip of a taxonomy"
    )
    directory = serializers.CharField(required=False, help_text="A directory on the server (staff only)")
    git = serializers.CharField(required=False, help_text="A git repository on the server (staff only)")
    ref = serializers.CharField(required=False, default="HEAD")
    prune = serializers.BooleanField(
        required=False, default=False, help_text="Delete the leaves that the source does not hold"
    )
    dry_run = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Change nothing: the job's plan says what the import would create, update and remove (removed_paths)",
    )
    allow_remove_all = serializers.BooleanField(
        required=False, default=False, help_text="Let a prune remove every leaf (refused otherwise)"
    )

    def validate(self, attrs):
        given = [key for key in ("archive", "directory", "git") if attrs.get(key)]
        if len(given) != 1:
            raise serializers.ValidationError("Give exactly one of archive, directory or git.")
        return attrs


class DiffSerializer(serializers.Serializer):
    baseline = serializers.DictField(allow_null=True)
    added = serializers.ListField(child=serializers.CharField())
    modified = serializers.ListField(child=serializers.CharField())
    removed = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.IntegerField()


KIND_CHOICES = Kind.choices


class ImportRefusedSerializer(ErrorSerializer):
    """A refused or failed import: the error shape, with the import's record beside it."""

    def get_fields(self):
        fields = super().get_fields()
        fields["import"] = ImportSerializer(required=False)
        return fields
