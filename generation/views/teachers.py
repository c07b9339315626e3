"""Teacher configurations: the list, the create and edit form, and the embedded default."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from generation.forms import TeacherForm
from generation.models import Teacher
from generation.selectors import teacher_endpoints, teacher_list
from generation.services.teachers import teacher_create as create_teacher
from generation.services.teachers import teacher_delete, teacher_ensure_default, teacher_update
from labweb.errors import LabError
from labweb.roles import any_role_required, operator_required
from labweb.web import add_lab_error, is_partial

FORM_TEMPLATE = "generation/teacher_form.html"


@require_GET
@any_role_required
def teachers(request: HttpRequest) -> HttpResponse:
    teachers = list(teacher_list())
    for teacher in teachers:
        teacher.endpoint_views = teacher_endpoints(teacher)
    return render(request, "generation/teacher_list.html", {"teachers": teachers})


def _form_page(request: HttpRequest, form: TeacherForm, *, status: int = 200) -> HttpResponse:
    template = f"{FORM_TEMPLATE}#teacher-form" if is_partial(request) else FORM_TEMPLATE
    return render(request, template, {"form": form, "teacher": form.teacher}, status=status)


def _saved(request: HttpRequest, message: str) -> HttpResponse:
    messages.success(request, message)
    if is_partial(request):
        return HttpResponseClientRedirect(reverse("generation:teachers"))
    return redirect("generation:teachers")


@require_http_methods(["GET", "POST"])
@operator_required
def teacher_create(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _form_page(request, TeacherForm())
    form = TeacherForm(request.POST)
    if not form.is_valid():
        return _form_page(request, form, status=422)
    try:
        teacher = create_teacher(user=request.user, api_key=form.cleaned_data["api_key"], **form.teacher_fields())
    except LabError as error:
        return _form_page(request, form, status=add_lab_error(form, error))
    return _saved(request, f"Teacher “{teacher.name}” added.")


@require_http_methods(["GET", "POST"])
@operator_required
def teacher_edit(request: HttpRequest, pk: int) -> HttpResponse:
    teacher = get_object_or_404(Teacher, pk=pk)
    if request.method == "GET":
        return _form_page(request, TeacherForm(teacher=teacher))
    form = TeacherForm(request.POST, teacher=teacher)
    if not form.is_valid():
        return _form_page(request, form, status=422)
    try:
        teacher = teacher_update(
            teacher=teacher, user=request.user, api_key=form.api_key_change(), **form.teacher_fields()
        )
    except LabError as error:
        return _form_page(request, form, status=add_lab_error(form, error))
    return _saved(request, f"Teacher “{teacher.name}” saved.")


@require_POST
@operator_required
def teacher_default(request: HttpRequest) -> HttpResponse:
    teacher = teacher_ensure_default()
    messages.success(request, f"The embedded teacher “{teacher.name}” is ready to choose for a run.")
    return redirect("generation:teachers")


@require_POST
@operator_required
def teacher_remove(request: HttpRequest, pk: int) -> HttpResponse:
    teacher = get_object_or_404(Teacher, pk=pk)
    try:
        teacher_delete(teacher=teacher, user=request.user)
    except LabError as error:
        messages.error(request, error.message)
        return redirect("generation:teacher_edit", pk=pk)
    messages.success(request, f"Teacher “{teacher.name}” deleted.")
    return redirect("generation:teachers")
