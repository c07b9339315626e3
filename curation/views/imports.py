"""Import a taxonomy from an uploaded archive, a server folder or a git repository, and the import records."""

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from curation import services
from curation.forms import IMPORT_FORMS
from curation.models import TaxonomyImport
from curation.selectors import import_list as imports_newest_first
from curation.taxonomy.source import Limits, TaxonomyRead, read_archive, read_directory, read_git
from labweb.roles import any_role_required, curator_required
from labweb.web import form_errors

SERVER_SOURCES = ("directory", "git")


def import_limits() -> Limits:
    return Limits(
        max_file_bytes=settings.LABWEB_IMPORT_MAX_FILE_BYTES,
        max_total_bytes=settings.LABWEB_IMPORT_MAX_TOTAL_BYTES,
        max_files=settings.LABWEB_IMPORT_MAX_FILES,
    )


def _source_kind(request: HttpRequest) -> str:
    """Which of the three forms was posted: named by `source`, else recognised by its field."""
    kind = request.POST.get("source", "")
    if kind in IMPORT_FORMS:
        return kind
    if "archive" in request.FILES:
        return "archive"
    if request.POST.get("repository"):
        return "git"
    if request.POST.get("directory"):
        return "directory"
    return "archive"


def _reader(kind: str, data: dict) -> tuple[Callable[[], TaxonomyRead], str]:
    limits = import_limits()
    if kind == "archive":
        upload = data["archive"]
        return (lambda: read_archive(upload.file, upload.name, limits)), f"upload {upload.name}"
    if kind == "directory":
        path = data["directory"].strip()
        return (lambda: read_directory(path, limits)), path
    repository, ref = data["repository"].strip(), (data.get("ref") or "HEAD").strip()
    return (lambda: read_git(repository, ref, limits)), f"{repository}@{ref}"


@require_http_methods(["GET", "POST"])
@curator_required
def import_start(request: HttpRequest) -> HttpResponse:
    forms = {kind: form_class() for kind, form_class in IMPORT_FORMS.items()}
    errors, status = [], 200
    if request.method == "POST":
        active = _source_kind(request)
        if active in SERVER_SOURCES and not request.user.is_staff:
            raise PermissionDenied("Only staff may import from a path on the server.")
        form = forms[active] = IMPORT_FORMS[active](request.POST, request.FILES)
        if form.is_valid():
            read, source = _reader(active, form.cleaned_data)
            record = services.taxonomy_import(
                read=read, source=source, user=request.user, prune=form.cleaned_data["prune"]
            )
            return redirect("curation:import_detail", pk=record.pk)
        errors, status = form_errors(form), 422
    return render(
        request,
        "curation/import.html",
        {
            "forms": forms,
            "errors": errors,
            "recent": imports_newest_first()[:5],
            "max_file_kib": settings.LABWEB_IMPORT_MAX_FILE_BYTES // 1024,
            "max_total_mib": settings.LABWEB_IMPORT_MAX_TOTAL_BYTES // (1024 * 1024),
            "max_files": settings.LABWEB_IMPORT_MAX_FILES,
        },
        status=status,
    )


@require_GET
@any_role_required
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    record = get_object_or_404(TaxonomyImport.objects.select_related("created_by", "snapshot"), pk=pk)
    by_file: dict[str, list[dict]] = {}
    for problem in record.problems:
        by_file.setdefault(problem.get("path") or "(the source)", []).append(problem)
    return render(
        request,
        "curation/import_detail.html",
        {
            "record": record,
            "problem_files": sorted(by_file.items()),
            "problem_count": len(record.problems),
        },
    )


@require_GET
@any_role_required
def import_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(imports_newest_first(), 50).get_page(request.GET.get("page"))
    return render(request, "curation/import_list.html", {"page": page})
