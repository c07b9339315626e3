"""Import a taxonomy from an uploaded archive, a server folder or a git repository, and the import records."""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.forms import IMPORT_FORMS, ImportForm
from curation.models import ImportJob, TaxonomyImport
from curation.monitor import job_progress
from curation.selectors import import_list as imports_newest_first
from curation.services.imports.jobs import ImportRefused, import_job_create, job_plan
from curation.services.imports.jobs import import_job_cancel as cancel_job
from labweb.errors import LabError
from labweb.roles import any_role_required, curator_required
from labweb.web import form_errors, is_partial, job_command, lab_errors


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
    request: HttpRequest, forms: dict[str, ImportForm], *, errors: list[dict] = (), status: int = 200
) -> HttpResponse:
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


@require_http_methods(["GET", "POST"])
@curator_required
def import_start(request: HttpRequest) -> HttpResponse:
    """Queue an import, or its dry run, and follow it on its job's page. A prune always runs its dry run first,
    which lists the leaves it would remove, and imports only when that list is confirmed."""
    forms = {kind: form_class() for kind, form_class in IMPORT_FORMS.items()}
    if request.method == "GET":
        return _page(request, forms)
    kind = _source_kind(request)
    form = forms[kind] = IMPORT_FORMS[kind](request.POST, request.FILES)
    if not form.is_valid():
        return _page(request, forms, errors=form_errors(form), status=422)
    data = form.cleaned_data
    return _queue(
        request,
        lambda: import_job_create(
            source=form.source(),
            user=request.user,
            prune=data["prune"],
            allow_remove_all=data["allow_remove_all"],
            dry_run=data["dry_run"] or (data["prune"] and not data["confirm_prune"]),
        ),
        forms,
    )


def _queue(request: HttpRequest, create, forms: dict[str, ImportForm]) -> HttpResponse:
    try:
        job = create()
    except PermissionDenied as refusal:
        return _page(request, forms, errors=[{"field": None, "message": str(refusal)}], status=403)
    except ImportRefused as refused:
        return redirect("curation:import_detail", pk=refused.record.pk)
    except LabError as error:
        return _page(request, forms, errors=lab_errors(error), status=error.status if error.status == 409 else 422)
    return redirect("curation:import_job", pk=job.pk)


@require_POST
@curator_required
def import_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """Import what a dry run read (an upload is not sent again), with its prune."""
    dry = get_object_or_404(ImportJob, pk=pk, dry_run=True)
    forms = {kind: form_class() for kind, form_class in IMPORT_FORMS.items()}
    return _queue(
        request,
        lambda: import_job_create(
            user=request.user,
            prune=dry.prune,
            allow_remove_all=bool(request.POST.get("allow_remove_all")),
            confirming=dry,
        ),
        forms,
    )


@require_GET
@any_role_required
def import_job(request: HttpRequest, pk: int) -> HttpResponse:
    """An import's progress (htmx polls it), then its result page; a dry run's plan, with the import to confirm."""
    job = get_object_or_404(ImportJob.objects.select_related("created_by"), pk=pk)
    if job.record_id and not job.is_active:
        target = reverse("curation:import_detail", args=[job.record_id])
        if is_partial(request):
            return HttpResponse(headers={"HX-Redirect": target})
        return redirect(target)
    context = {"job": job, "plan": job_plan(job), "percent": job_progress([job])[job.pk].percent}
    return render(
        request, "curation/import_job.html#job" if is_partial(request) else "curation/import_job.html", context
    )


@require_POST
@curator_required
def import_job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(ImportJob, pk=pk)
    return job_command(
        request, job, cancel_job, "Import {job.pk} cancelled; nothing was changed.", "curation:import_job"
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
