"""Evaluation pages: the list, a new evaluation, a job's live progress and its results (per leaf, base against
checkpoint; the answers and the judge's rationale side by side), two jobs compared, and exports."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evaluation import selectors
from evaluation.forms import EvaluationForm
from evaluation.models import EvaluationJob
from evaluation.services import jobs as services
from evaluation.services import playground as playground_service
from evaluation.services import results
from labweb.errors import LabError
from labweb.roles import any_role_required, operator_required
from labweb.web import add_lab_error, is_partial, job_command, render_fragments

DETAIL = "evaluation/job_detail.html"
ANSWERS_PER_PAGE = 25


@require_GET
@any_role_required
def job_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.job_list(), 25).get_page(request.GET.get("page"))
    context = {"page": page, "any_active": any(job.is_active for job in page.object_list)}
    return render(
        request, "evaluation/job_list.html#jobs" if is_partial(request) else "evaluation/job_list.html", context
    )


@require_http_methods(["GET", "POST"])
@operator_required
def job_create(request: HttpRequest) -> HttpResponse:
    initial = {"checkpoint": request.GET.get("checkpoint")} if request.GET.get("checkpoint") else None
    form = EvaluationForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            try:
                job = services.evaluation_create(user=request.user, **form.service_arguments())
            except LabError as error:
                status = add_lab_error(form, error, {"thresholds": "judge_threshold"})
            else:
                messages.success(request, f"{job} queued on the training workers.")
                return redirect("evaluation:job_detail", pk=job.pk)
    return render(request, "evaluation/job_create.html", {"form": form}, status=status)


def _job(pk: int) -> EvaluationJob:
    return get_object_or_404(selectors.job_list(), pk=pk)


def _context(job: EvaluationJob) -> dict:
    return {
        "job": job,
        "summary": results.job_summary(job),
        "sets": results.set_summary(job),
        "leaves": job.leaf_results.all(),
        "events": job.events.all()[:10],
        "can_cancel": job.is_active,
        "can_resume": job.status in ("failed", "cancelled"),
    }


@require_GET
@any_role_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, DETAIL, _context(_job(pk)))


@require_GET
@any_role_required
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    if not is_partial(request):
        return redirect(f"{reverse('evaluation:job_detail', args=[pk])}#progress")
    return render_fragments(request, DETAIL, ["progress", "head"], _context(_job(pk)), oob={"oob": True})


@require_GET
@any_role_required
def job_answers(request: HttpRequest, pk: int) -> HttpResponse:
    """The judged questions of a leaf (or all), each with the base's and the checkpoint's answer and rationale."""
    job = _job(pk)
    try:
        leaf = selectors.text_param(request.GET, "leaf")
    except LabError as error:
        raise Http404(error.message) from None
    rows = results.side_by_side(job, leaf=leaf or None)
    page = Paginator(rows, ANSWERS_PER_PAGE).get_page(request.GET.get("page"))
    leaves = list(job.leaf_results.values_list("leaf_path", flat=True))
    context = {"job": job, "page": page, "leaf": leaf, "leaves": leaves, "query": f"leaf={leaf}&" if leaf else ""}
    return render(request, "evaluation/answers.html", context)


@require_GET
@any_role_required
def job_export(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    job = _job(pk)
    if kind == "csv":
        response = StreamingHttpResponse(results.export_csv(job), content_type="text/csv; charset=utf-8")
    elif kind == "json":
        response = StreamingHttpResponse(selectors.export_json(job), content_type="application/json")
    else:
        raise Http404("Export as csv or json.")
    response["Content-Disposition"] = f'attachment; filename="evaluation-{job.pk}.{kind}"'
    return response


@require_GET
@any_role_required
def job_compare(request: HttpRequest) -> HttpResponse:
    """Two evaluations side by side per leaf (a phased and a stacked plan of the same data, say)."""
    choices = list(selectors.job_list().filter(status="succeeded")[:200])
    status, error = 200, ""
    try:
        first, second = (selectors.job_param(request.GET, name) for name in ("first", "second"))
    except LabError as refused:
        first = second = None
        status, error = 400, refused.message
    rows = results.compare_jobs(first, second) if first and second else []
    context = {"choices": choices, "first": first, "second": second, "rows": rows, "error": error}
    return render(request, "evaluation/compare.html", context, status=status)


def _command(request: HttpRequest, pk: int, service, done: str) -> HttpResponse:
    return job_command(request, _job(pk), service, done, "evaluation:job_detail")


@require_POST
@operator_required
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _command(request, pk, services.evaluation_cancel, "{job} cancelled; what was measured is kept.")


@require_POST
@operator_required
def job_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _command(request, pk, services.evaluation_resume, "{job} resumed from what was saved.")


@require_http_methods(["GET", "POST"])
@operator_required
def playground(request: HttpRequest) -> HttpResponse:
    """Two models, one conversation. With JavaScript the page streams both answers (`playground_stream`); without
    it, the form posts here and the page comes back with both answers whole."""
    data = request.POST if request.method == "POST" else request.GET
    leaves = selectors.playground_leaves()
    leaf = data.get("leaf") or ""
    context = {
        "models": playground_service.model_choices(),
        "left": data.get("left") or "",
        "right": data.get("right") or "",
        "leaves": leaves,
        "leaf": leaf,
        "prompts": playground_service.leaf_prompts(leaf) if leaf in leaves else [],
        "prompt": data.get("prompt") or "",
        "answers": None,
        "error": "",
    }
    status = 200
    if request.method == "POST":
        try:
            messages_so_far = playground_service.conversation(context["prompt"])
        except LabError as error:
            context["error"], status = error.message, 422
        else:
            context["answers"] = [
                "".join(playground_service.stream(context[side], messages_so_far)) for side in ("left", "right")
            ]
    return render(request, "evaluation/playground.html", context, status=status)


@require_POST
@operator_required
def playground_stream(request: HttpRequest) -> HttpResponse:
    """One model's answer to the conversation, streamed as plain text a piece at a time."""
    try:
        messages_so_far = playground_service.conversation(
            request.POST.get("prompt", ""), request.POST.get("history", "")
        )
    except LabError as error:
        return HttpResponse(error.message, status=422, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(
        playground_service.stream(request.POST.get("model", ""), messages_so_far),
        content_type="text/plain; charset=utf-8",
    )
    response["X-Accel-Buffering"] = "no"  # a proxy in front must pass each piece on as it comes
    response["Cache-Control"] = "no-store"
    return response
