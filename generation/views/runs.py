"""Generation runs: the list, the start form, the live monitor, cancel, resume and retry of failed items."""

import functools

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from generation import selectors
from generation.extensions import run_panels
from generation.forms import RunForm
from generation.models import GenerationRun, Teacher
from generation.services import runs as run_services
from generation.services.teachers import ignored_sampling_warning, teacher_quality_warning
from labweb.errors import LabError
from labweb.roles import any_role_required, operator_required
from labweb.web import add_lab_error, is_partial, render_fragments

DETAIL = "generation/run_detail.html"


@require_GET
@any_role_required
def run_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.run_list(), 50).get_page(request.GET.get("page"))
    for run in page.object_list:
        run.percent = selectors.run_percent(run)
    context = {"page": page, "any_active": any(run.is_active for run in page.object_list)}
    template = "generation/run_list.html#runs" if is_partial(request) else "generation/run_list.html"
    return render(request, template, context)


@require_http_methods(["GET", "POST"])
@operator_required
def run_create(request: HttpRequest) -> HttpResponse:
    form = RunForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = run_services.run_create(
                    teacher=data["teacher"],
                    user=request.user,
                    scope=data["scope"],
                    baseline=data["baseline"],
                    leaf_ids=form.leaf_ids(),
                    samples_per_leaf=data["samples_per_leaf"],
                    config=form.config(),
                    name=data["name"],
                )
            except LabError as error:
                status = add_lab_error(form, error)
            else:
                messages.success(request, f"{run} planned and queued.")
                url = reverse("generation:run_detail", args=[run.pk])
                return HttpResponseClientRedirect(url) if is_partial(request) else redirect(url)
    context = {"form": form, "has_teachers": Teacher.objects.exists(), **_estimate_context(form)}
    template = "generation/run_create.html#run-form" if is_partial(request) else "generation/run_create.html"
    return render(request, template, context, status=status)


@require_GET
@operator_required
def run_estimate(request: HttpRequest) -> HttpResponse:
    """The cost panel of the new-run form, for the form as it stands (htmx asks on every change)."""
    if not is_partial(request):
        return redirect("generation:run_create")
    return render(request, "generation/run_create.html#run-estimate", _estimate_context(RunForm(request.GET)))


def _estimate_context(form: RunForm) -> dict:
    arguments = form.estimate_arguments() if form.is_bound else None
    if not form.is_bound:
        teacher = form.fields["teacher"].queryset.first()
        if teacher is not None:
            arguments = {"teacher": teacher, "samples_per_leaf": form.fields["samples_per_leaf"].initial}
    if arguments is None:
        return {"estimate": None, "estimate_error": "Choose a teacher and valid settings to see what the run costs."}
    teacher = arguments["teacher"]
    try:
        estimate = selectors.run_estimate(**arguments)
    except LabError as error:
        return {"estimate": None, "estimate_error": error.message}
    return {"estimate": estimate, "estimate_teacher": teacher, "quality_warning": teacher_quality_warning(teacher)}


def _get_run(pk: int) -> GenerationRun:
    return get_object_or_404(GenerationRun.objects.select_related("teacher", "baseline", "created_by"), pk=pk)


def monitor_context(run: GenerationRun) -> dict:
    progress = selectors.run_progress(run, leaves=selectors.LEAF_ROWS)
    return {
        "run": run,
        "progress": progress,
        # Polled until the run is at rest: a cancelled run's items in flight still finish or stop.
        "live": run.is_active or progress.in_flight > 0,
        "leaves": progress.leaves,
        "leaves_hidden": progress.leaf_count - len(progress.leaves),
        "events": selectors.run_events(run),
        "can_cancel": run.is_active,
        "can_resume": run_services.run_resume_refusal(run=run) is None,
        "teacher_changes": run_services.run_teacher_changes(run=run),
        "quality_warning": run_services.run_quality_warning(run),
        "sampling_warning": ignored_sampling_warning(
            same_answers=progress.teacher["same_answers"],
            temperature=run.config.get("sampling", {}).get("temperature", 0),
        ),
        "can_retry_failed": not run.is_active and progress.states.get("failed", 0) > 0,
    }


@require_GET
@any_role_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run(pk)
    return render(request, DETAIL, monitor_context(run) | {"panels": run_panels(request, run)})


@require_GET
@any_role_required
def run_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The polled panel; the head (status, buttons) rides along out of band so it changes when the run ends."""
    if not is_partial(request):
        return redirect(f"{reverse('generation:run_detail', args=[pk])}#run-progress")
    return _monitor_fragments(request, monitor_context(_get_run(pk)), first="progress")


def _monitor_fragments(request: HttpRequest, context: dict, *, first: str, status: int = 200) -> HttpResponse:
    """The swapped partial (`first`) and the other one out of band: head and progress always agree."""
    other = "head" if first == "progress" else "progress"
    return render_fragments(request, DETAIL, [first, other], context, oob={f"{other}_oob": True}, status=status)


def _command(request: HttpRequest, pk: int, service, done: str) -> HttpResponse:
    run = _get_run(pk)
    error = None
    try:
        run = service(run=run, user=request.user)
    except LabError as refused:
        error = refused
    if is_partial(request):
        context = monitor_context(_get_run(pk)) | {"command_error": error.message if error else ""}
        return _monitor_fragments(request, context, first="head", status=409 if error else 200)
    if error:
        messages.error(request, error.message)
    else:
        messages.success(request, done.format(run=run))
    return redirect("generation:run_detail", pk=pk)


@require_POST
@operator_required
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _command(
        request, pk, run_services.run_cancel, "{run} cancelled; work in flight stops at its next heartbeat."
    )


@require_POST
@operator_required
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    if request.POST.get("teacher") == "current":
        resume = functools.partial(run_services.run_resume, with_current_teacher=True)
        return _command(request, pk, resume, "{run} resumed with the teacher as it is now.")
    return _command(request, pk, run_services.run_resume, "{run} resumed.")


@require_POST
@operator_required
def run_retry_failed(request: HttpRequest, pk: int) -> HttpResponse:
    return _command(request, pk, run_services.run_retry_failed, "{run}: its failed work items are queued again.")
