"""Admin for looking at the taxonomy. Every row is read-only here: an edit made in the admin would record no
revision, skip validation, leave the content hash stale (so diff and lineage would lie) and let `is_valid` be set
by hand. Changes go through the services: the pages, the API or the commands."""

from django.contrib import admin

from curation.models import (
    Document,
    ImportChunk,
    ImportEvent,
    ImportJob,
    Leaf,
    LeafRevision,
    SeedExample,
    TaxonomyImport,
    TaxonomySnapshot,
)
from labweb.admin import ReadOnlyAdmin, ReadOnlyInline


class SeedInline(ReadOnlyInline, admin.StackedInline):
    model = SeedExample
    fields = ["position", "context", "question", "answer", "questions_and_answers"]


class DocumentInline(ReadOnlyInline, admin.TabularInline):
    model = Document
    fields = ["name", "size", "sha256"]


@admin.register(Leaf)
class LeafAdmin(ReadOnlyAdmin):
    list_display = ["path", "kind", "version", "is_valid", "revision", "updated_at", "updated_by"]
    list_filter = ["kind", "is_valid", "version"]
    search_fields = ["path", "task_description", "domain", "created_by"]
    inlines = [SeedInline, DocumentInline]


@admin.register(SeedExample)
class SeedExampleAdmin(ReadOnlyAdmin):
    list_display = ["leaf", "position", "question"]
    search_fields = ["leaf__path", "question", "context"]
    list_select_related = ["leaf"]


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ["name", "leaf", "size", "created_at"]
    search_fields = ["name", "leaf__path"]
    list_select_related = ["leaf"]


@admin.register(LeafRevision)
class LeafRevisionAdmin(ReadOnlyAdmin):
    list_display = ["path", "number", "action", "author", "created_at"]
    list_filter = ["action"]
    search_fields = ["path"]


@admin.register(TaxonomySnapshot)
class TaxonomySnapshotAdmin(ReadOnlyAdmin):
    """A snapshot is a diff baseline: editing its hashes would make diff lie."""

    list_display = ["name", "created_at", "created_by"]


@admin.register(TaxonomyImport)
class TaxonomyImportAdmin(ReadOnlyAdmin):
    list_display = ["source", "status", "created", "updated", "unchanged", "rejected", "duration_ms", "created_at"]
    list_filter = ["status"]


class ImportEventInline(ReadOnlyInline, admin.TabularInline):
    model = ImportEvent
    fields = ["created_at", "level", "message"]


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyAdmin):
    """An import as a job: its state moves only through the import services (queue, run, cancel, reap)."""

    list_display = ["pk", "label", "dry_run", "status", "stage", "leaves_validated", "leaves_total", "created_at"]
    list_filter = ["status", "dry_run"]
    search_fields = ["label"]
    exclude = ["plan"]
    inlines = [ImportEventInline]


@admin.register(ImportEvent)
class ImportEventAdmin(ReadOnlyAdmin):
    list_display = ["job", "level", "message", "created_at"]
    list_filter = ["level"]


@admin.register(ImportChunk)
class ImportChunkAdmin(ReadOnlyAdmin):
    """A spooled piece of an upload (bytes): listed, not shown."""

    list_display = ["job", "seq"]
    exclude = ["data"]
