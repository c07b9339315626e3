"""Training pages: datasets (builds of approved samples), jobs (list, new, live detail with loss charts and
checkpoints) and JSONL uploads."""

from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generation.models import GenerationRun
from labweb.errors import LabError
from labweb.roles import OPERATOR, any_role_required, has_role, operator_required
from labweb.web import add_lab_error, is_partial, job_command, render_fragments
from training import selectors, storage
from training.forms import DatasetForm, JobForm, PromptForm, UploadForm, form_field
from training.models import Checkpoint, Dataset, DatasetFile, TrainingJob
from training.services import datasets as dataset_services
from training.services import jobs as job_services
from training.services import mixes, prompts, uploads

LIST = "training/job_list.html"
DETAIL = "training/job_detail.html"
LOG_LINES = 40


@require_GET
@any_role_required
def job_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(TrainingJob.objects.select_related("created_by").prefetch_related("phases"), 25).get_page(
        request.GET.get("page")
    )
    context = {"page": page, "any_active": any(job.is_active for job in page.object_list)}
    return render(request, f"{LIST}#jobs" if is_partial(request) else LIST, context)


@require_http_methods(["GET", "POST"])
@operator_required
def job_create(request: HttpRequest) -> HttpResponse:
    form = JobForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            data = form.cleaned_data
            try:
                if "mix" in request.POST:  # "Show the mix": what each phase would train on, nothing started
                    mix = mixes.job_mix(base_model=data["base_model"], phases=form.phases())
                    return render(request, "training/job_create.html", {"form": form, "mix": mix})
                job = job_services.job_create(
                    name=data["name"] or "",
                    base_model=data["base_model"],
                    phases=form.phases(),
                    processes_per_node=data["processes_per_node"],
                    nodes=data["nodes"],
                    user=request.user,
                )
            except LabError as error:
                status = add_lab_error(form, error, {error.field or "": form_field(error.field)})
            else:
                messages.success(request, f"{job} queued on the training workers.")
                return redirect("training:job_detail", pk=job.pk)
    return render(request, "training/job_create.html", {"form": form}, status=status)


def _get_job(pk: int) -> TrainingJob:
    return get_object_or_404(TrainingJob.objects.select_related("created_by"), pk=pk)


def monitor_context(job: TrainingJob) -> dict:
    phases = list(job.phases.all())
    for phase in phases:
        phase.latest, phase.seconds_left = selectors.phase_pace(phase)
    running = next((phase for phase in phases if phase.is_active), None)
    log_phase = running or next((phase for phase in reversed(phases) if phase.started_at), None)
    return {
        "job": job,
        "phases": phases,
        "checkpoints": Checkpoint.objects.filter(phase__job=job).select_related("phase").order_by("-created_at"),
        "events": job.events.all()[:20],
        "log": _log_tail(log_phase),
        "log_phase": log_phase,
        "can_cancel": job.is_active,
        "can_resume": not job.is_active and any(phase.status != "succeeded" for phase in phases),
    }


def _log_tail(phase) -> str:
    if phase is None:
        return ""
    try:
        with open(Path(phase.output_dir) / "node-0.log", "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 64 * 1024))  # the tail only: a log can grow to gigabytes
            return "\n".join(handle.read().decode("utf-8", "replace").splitlines()[-LOG_LINES:])
    except OSError:
        return ""


@require_GET
@any_role_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, DETAIL, monitor_context(_get_job(pk)))


@require_GET
@any_role_required
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The polled panel; the head (status, buttons) rides along out of band so it changes when the job ends."""
    if not is_partial(request):
        return redirect(f"{reverse('training:job_detail', args=[pk])}#job-progress")
    return render_fragments(request, DETAIL, ["progress", "head"], monitor_context(_get_job(pk)), oob={"oob": True})


def _command(request: HttpRequest, pk: int, service, done: str) -> HttpResponse:
    return job_command(request, _get_job(pk), service, done, "training:job_detail")


@require_POST
@operator_required
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _command(request, pk, job_services.job_cancel, "{job} cancelled: the trainer saves a checkpoint first.")


@require_POST
@operator_required
def job_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _command(request, pk, job_services.job_resume, "{job} resumed from its last saved state.")


@require_http_methods(["GET", "POST"])
@operator_required
def upload_list(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            file = form.cleaned_data["file"]
            try:
                stored = uploads.upload_store(name=file.name, chunks=file.chunks(), user=request.user)
            except LabError as error:
                where = f" (line {error.line})" if error.line else ""
                form.add_error("file", f"{error.message}{where}")
            else:
                messages.success(request, f"{stored['path']}: {stored['samples']} samples. Name it in a recipe.")
                return redirect("training:upload_list")
    return render(request, "training/uploads.html", {"form": form, "uploads": uploads.upload_list()}, status=status)


@require_http_methods(["GET", "POST"])
@any_role_required
def checkpoint_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A checkpoint with its lineage, and a box to ask it something (operators): a worker answers."""
    checkpoint = get_object_or_404(Checkpoint.objects.select_related("phase__job"), pk=pk)
    form = PromptForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if not has_role(request.user, OPERATOR):
            raise PermissionDenied("Asking a checkpoint needs the operator role.")
        status = 422
        if form.is_valid():
            try:
                prompts.prompt_ask(checkpoint=checkpoint, prompt=form.cleaned_data["prompt"], user=request.user)
            except LabError as error:
                status = add_lab_error(form, error)
            else:
                return redirect("training:checkpoint_detail", pk=pk)
    context = {"checkpoint": checkpoint, "form": form, "asked": _asked(checkpoint)}
    template = "training/checkpoint.html#answers" if is_partial(request) else "training/checkpoint.html"
    return render(request, template, context, status=status)


def _asked(checkpoint: Checkpoint) -> dict:
    asked = list(checkpoint.prompts.select_related("created_by")[:20])
    return {"items": asked, "pending": any(item.is_active for item in asked)}


@require_GET
@any_role_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(Dataset.objects.select_related("created_by"), 25).get_page(request.GET.get("page"))
    return render(request, "training/dataset_list.html", {"page": page})


@require_http_methods(["GET", "POST"])
@operator_required
def dataset_create(request: HttpRequest) -> HttpResponse:
    form = DatasetForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            data = dict(form.cleaned_data)
            run = data.pop("run")
            try:
                dataset = dataset_services.dataset_create(
                    user=request.user, run=GenerationRun.objects.filter(pk=run).first() if run else None, **data
                )
            except LabError as error:
                status = add_lab_error(form, error)
            else:
                messages.success(request, f"{dataset} is being built.")
                return redirect("training:dataset_detail", pk=dataset.pk)
    return render(request, "training/dataset_create.html", {"form": form}, status=status)


@require_GET
@any_role_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset.objects.select_related("created_by", "run"), pk=pk)
    context = {"dataset": dataset, "files": dataset.files.all(), "per_leaf": sorted(dataset.per_leaf.items())}
    if dataset.status == "succeeded":  # what Train on it would train on, before it starts
        base_model = settings.LABWEB_DEFAULT_BASE_MODEL
        try:
            context["mix"] = mixes.dataset_mix(dataset, base_model=base_model)
        except LabError as error:
            context["mix_error"] = error.message
        context["base_model"] = base_model
    return render(request, "training/dataset_detail.html", context)


@require_POST
@operator_required
def dataset_train(request: HttpRequest, pk: int) -> HttpResponse:
    """A job over the build's phases, on the default base model; on the embedded one, settings for a CPU."""
    dataset = get_object_or_404(Dataset, pk=pk)
    base_model = request.POST.get("base_model") or settings.LABWEB_DEFAULT_BASE_MODEL
    try:
        job = job_services.job_create(
            name=f"{dataset} ({dataset.plan})",
            base_model=base_model,
            phases=dataset_services.dataset_phases(dataset, base_model=base_model),
            plan=dataset.plan,
            user=request.user,
        )
    except LabError as error:
        messages.error(request, error.message)
        return redirect("training:dataset_detail", pk=pk)
    messages.success(request, f"{job} queued over {dataset}.")
    return redirect("training:job_detail", pk=job.pk)


@require_GET
@any_role_required
def dataset_download(request: HttpRequest, pk: int, role: str) -> StreamingHttpResponse:
    return dataset_file_response(get_object_or_404(DatasetFile, dataset_id=pk, role=role))


def dataset_file_response(file: DatasetFile) -> StreamingHttpResponse:
    """A build's file as an attachment, streamed from the training storage a chunk at a time, from a bucket as
    the bytes arrive (the page's link and the API's)."""
    try:
        chunks = storage.stream(file.storage_path)
    except FileNotFoundError:
        raise Http404("The file is gone from the training storage.") from None
    response = StreamingHttpResponse(chunks, content_type="application/jsonl")
    response["Content-Length"] = str(file.bytes)
    response["Content-Disposition"] = content_disposition_header(True, f"dataset-{file.dataset_id}-{file.role}.jsonl")
    return response
