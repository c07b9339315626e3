from django.conf import settings
from django.db import models

from curation.taxonomy import KINDS
from curation.taxonomy.storage import (
    CREATED_BY_MAX,
    DOCUMENT_COMMIT_MAX,
    DOCUMENT_NAME_MAX,
    DOCUMENT_REPO_MAX,
    DOMAIN_MAX,
    LEAF_PATH_MAX,
)
from labweb import jobs


class Kind(models.TextChoices):
    KNOWLEDGE = "knowledge", "Knowledge"
    FOUNDATIONAL_SKILLS = "foundational_skills", "Foundational skills"
    COMPOSITIONAL_SKILLS = "compositional_skills", "Compositional skills"


assert tuple(Kind.values) == KINDS


class Leaf(models.Model):
    """A taxonomy leaf: one folder holding a `qna.yaml`. Folders above leaves are implied by `path`.

    Text fields are NULL where the file lacks the key, so that export writes back exactly what came in.
    """

    path = models.CharField(
        max_length=LEAF_PATH_MAX, unique=True, help_text="Folder path, e.g. compositional_skills/writing/freeform/jokes"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices, db_index=True)
    version = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="qna.yaml schema version; empty where the file has none"
    )
    created_by = models.CharField(max_length=CREATED_BY_MAX, null=True, blank=True)
    task_description = models.TextField(null=True, blank=True)
    domain = models.CharField(max_length=DOMAIN_MAX, null=True, blank=True)
    document_outline = models.TextField(null=True, blank=True)
    document_repo = models.CharField(max_length=DOCUMENT_REPO_MAX, null=True, blank=True)
    document_commit = models.CharField(max_length=DOCUMENT_COMMIT_MAX, null=True, blank=True)
    document_patterns = models.JSONField(null=True, blank=True)
    attribution = models.TextField(blank=True, help_text="attribution.txt beside qna.yaml")
    imported_qna = models.TextField(
        null=True,
        blank=True,
        help_text="The qna.yaml as last imported, exactly; export writes it back with LabWeb's edits applied",
    )
    extra = models.JSONField(default=dict, blank=True, help_text="Keys of the qna.yaml that LabWeb has no field for")

    problems = models.JSONField(default=list, blank=True)
    is_valid = models.BooleanField(default=False, db_index=True)
    content_hash = models.CharField(max_length=64, blank=True)
    revision = models.PositiveIntegerField(default=1, help_text="Bumped by every change; the optimistic-lock token")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def qna_path(self) -> str:
        return f"{self.path}/qna.yaml"


class SeedExample(models.Model):
    """A seed example. Skills: question, answer and optional context. Knowledge: context and Q&A pairs."""

    leaf = models.ForeignKey(Leaf, on_delete=models.CASCADE, related_name="seeds")
    position = models.PositiveIntegerField()
    context = models.TextField(null=True, blank=True)
    question = models.TextField(null=True, blank=True)
    answer = models.TextField(null=True, blank=True)
    questions_and_answers = models.JSONField(null=True, blank=True)
    extra = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["leaf", "position"]
        indexes = [models.Index(fields=["leaf", "position"])]

    def __str__(self) -> str:
        return f"{self.leaf.path} #{self.position + 1}"


class Document(models.Model):
    """A knowledge source document (Markdown) attached to its leaf."""

    leaf = models.ForeignKey(Leaf, on_delete=models.CASCADE, related_name="documents")
    name = models.CharField(max_length=DOCUMENT_NAME_MAX)
    content = models.TextField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["leaf", "name"]
        constraints = [models.UniqueConstraint(fields=["leaf", "name"], name="unique_document_name_per_leaf")]

    def __str__(self) -> str:
        return f"{self.leaf.path}/{self.name}"


class LeafRevision(models.Model):
    """The state of a leaf after one change: who, when, what changed, and the full content then."""

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        MOVE = "move"
        DELETE = "delete"
        IMPORT = "import"

    # The leaf's id outlives the leaf, so that a deleted leaf's history stays at its old URLs: deleting a leaf
    # leaves its revisions untouched, hence no database constraint. Ids are never reused (PostgreSQL sequences,
    # SQLite AUTOINCREMENT). Revisions of leaves deleted before this kept no id (NULL).
    leaf = models.ForeignKey(
        Leaf, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="revisions"
    )
    path = models.CharField(max_length=LEAF_PATH_MAX, db_index=True)
    number = models.PositiveIntegerField()
    action = models.CharField(max_length=16, choices=Action.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    changes = models.JSONField(default=list, help_text="Human-readable list of what changed")
    snapshot = models.JSONField(help_text="qna data, attribution and document hashes after the change")
    content_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.path} r{self.number}"


class TaxonomySnapshot(models.Model):
    """The content hash of every leaf at one moment: the baseline that diff compares against."""

    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    hashes = models.JSONField(help_text="{leaf path: content hash}")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class TaxonomyImport(models.Model):
    """One import: where from, what it changed, and every file it refused with the reason."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed", "Failed: every file rejected"
        REFUSED = "refused"

    source = models.CharField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    message = models.TextField(blank=True)
    files_seen = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    problems = models.JSONField(default=list)
    snapshot = models.ForeignKey(TaxonomySnapshot, null=True, blank=True, on_delete=models.SET_NULL)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.source} ({self.created_at:%Y-%m-%d %H:%M})"


class ImportJob(jobs.Job, jobs.Leased, jobs.Sent):
    """An import (or its dry run) as a job on a worker: where from, what to do, how far it got, and the result.

    The write is one transaction, so a job that stops anywhere (cancelled, its worker killed) changed nothing,
    and its next attempt reads the source again from the start. Only one job that writes may be active at a
    time (the constraint below); dry runs read and may run beside it.
    """

    class Stage(models.TextChoices):
        QUEUED = "", "Waiting for a worker"
        READING = "reading", "Reading the files"
        IMPORTING = "importing", "Validating and writing the leaves"
        DONE = "done", "Done"

    source_kind = models.CharField(max_length=16)
    location = models.CharField(max_length=1000, help_text="The upload's file name, or the path on the server")
    ref = models.CharField(max_length=200, blank=True)
    label = models.CharField(max_length=1000)
    dry_run = models.BooleanField(default=False)
    prune = models.BooleanField(default=False)
    allow_remove_all = models.BooleanField(default=False)
    upload_bytes = models.PositiveBigIntegerField(default=0)
    stage = models.CharField(max_length=16, choices=Stage.choices, blank=True, default=Stage.QUEUED)
    files_read = models.PositiveIntegerField(default=0)
    leaves_total = models.PositiveIntegerField(default=0, help_text="qna.yaml files found, once read")
    leaves_validated = models.PositiveIntegerField(default=0)
    leaves_written = models.PositiveIntegerField(default=0)
    record = models.OneToOneField(TaxonomyImport, null=True, blank=True, on_delete=models.SET_NULL, related_name="job")
    plan = models.JSONField(null=True, blank=True, help_text="A dry run's result: what the import would do")
    problems = models.JSONField(default=list, blank=True, help_text="Why a job with no import record failed")

    class Meta(jobs.Job.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["dry_run"],
                condition=models.Q(status__in=[s.value for s in jobs.ACTIVE], dry_run=False),
                name="one_active_import_that_writes",
            )
        ]

    def __str__(self) -> str:
        return f"{'Dry run' if self.dry_run else 'Import'} {self.pk} of {self.label}"


class ImportChunk(models.Model):
    """A piece of an uploaded archive, spooled in the request for the worker to read (any machine may run it)."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="unique_import_chunk")]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.seq}"


class ImportEvent(jobs.Event):
    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="events")
