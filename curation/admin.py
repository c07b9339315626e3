from django.contrib import admin

from curation.models import Document, Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot


class SeedInline(admin.StackedInline):
    model = SeedExample
    extra = 0
    fields = ["position", "context", "question", "answer", "questions_and_answers"]


class DocumentInline(admin.TabularInline):
    model = Document
    extra = 0
    fields = ["name", "size", "sha256"]
    readonly_fields = ["size", "sha256"]


@admin.register(Leaf)
class LeafAdmin(admin.ModelAdmin):
    list_display = ["path", "kind", "version", "is_valid", "revision", "updated_at", "updated_by"]
    list_filter = ["kind", "is_valid", "version"]
    search_fields = ["path", "task_description", "domain", "created_by"]
    readonly_fields = ["content_hash", "problems", "revision", "created_at", "updated_at"]
    inlines = [SeedInline, DocumentInline]


@admin.register(SeedExample)
class SeedExampleAdmin(admin.ModelAdmin):
    list_display = ["leaf", "position", "question"]
    search_fields = ["leaf__path", "question", "context"]
    list_select_related = ["leaf"]


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["name", "leaf", "size", "created_at"]
    search_fields = ["name", "leaf__path"]
    list_select_related = ["leaf"]


@admin.register(LeafRevision)
class LeafRevisionAdmin(admin.ModelAdmin):
    list_display = ["path", "number", "action", "author", "created_at"]
    list_filter = ["action"]
    search_fields = ["path"]
    readonly_fields = [f.name for f in LeafRevision._meta.fields]


@admin.register(TaxonomySnapshot)
class TaxonomySnapshotAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "created_by"]


@admin.register(TaxonomyImport)
class TaxonomyImportAdmin(admin.ModelAdmin):
    list_display = ["source", "status", "created", "updated", "unchanged", "rejected", "duration_ms", "created_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in TaxonomyImport._meta.fields]
