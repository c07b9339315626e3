"""Import a taxonomy from an uploaded archive, a server folder or a git repository, and the import records."""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from curation import services
from curation.forms import IMPORT_FORMS, ImportForm
from curation.models import TaxonomyImport
from curation.selectors import import_list as imports_newest_first
from curation.services.imports import ImportPlan
from labweb.errors import LabError
from labweb.roles import any_role_required, curator_required
from labweb.web import form_errors, lab_errors


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


def _page(
    request: HttpRequest,
    forms: dict[str, ImportForm],
    *,
    errors: list[dict] = (),
    plan: ImportPlan | None = None,
    active: ImportForm | None = None,
    confirm: ImportForm | None = None,
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "curation/import.html",
        {
            "forms": forms,
            "errors": errors,
            "plan": plan,
            "active": active,
            "confirm": confirm,
            "recent": imports_newest_first()[:5],
            "max_file_kib": settings.LABWEB_IMPORT_MAX_FILE_BYTES // 1024,
            "max_total_mib": settings.LABWEB_IMPORT_MAX_TOTAL_BYTES // (1024 * 1024),
            "max_files": settings.LABWEB_IMPORT_MAX_FILES,
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@curator_required
def import_start(request: HttpRequest) -> HttpResponse:
    """Import, or (dry run) show what an import would do. A prune always shows first which leaves it would
    remove, and imports only when that list is confirmed."""
    forms = {kind: form_class() for kind, form_class in IMPORT_FORMS.items()}
    if request.method == "GET":
        return _page(request, forms)
    kind = _source_kind(request)
    form = forms[kind] = IMPORT_FORMS[kind](request.POST, request.FILES)
    if not form.is_valid():
        return _page(request, forms, errors=form_errors(form), status=422)
    data, source = form.cleaned_data, form.source()
    try:
        if data["dry_run"] or (data["prune"] and not data["confirm_prune"]):
            plan = services.taxonomy_import_preview(source=source, user=request.user, prune=data["prune"])
            if data["dry_run"] or plan.removed:
                confirm = IMPORT_FORMS[kind](auto_id="id_confirm_%s")
                return _page(request, forms, plan=plan, active=form, confirm=confirm)
            if source.stream is not None:
                source.stream.seek(0)
        record = services.taxonomy_import(
            source=source, user=request.user, prune=data["prune"], allow_remove_all=data["allow_remove_all"]
        )
    except PermissionDenied as refusal:
        return _page(request, forms, errors=[{"field": None, "message": str(refusal)}], status=403)
    except LabError as error:
        return _page(request, forms, errors=lab_errors(error), status=422)
    return redirect("curation:import_detail", pk=record.pk)


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
