"""The leaf editor page and the leaf's own actions: fields, live validation, create, move, delete, YAML, history."""

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation import services
from curation.forms import LeafDeleteForm, LeafFieldsForm, LeafMoveForm, LeafPathForm, SeedForm
from curation.models import Leaf
from curation.selectors import DeletedLeaf, deleted_leaf, deleted_leaves, leaf_documents, leaf_qna
from curation.selectors import leaf_history as leaf_revisions
from curation.taxonomy import dump_qna
from curation.views.editor import Editor, build_editor, preview_problems
from labweb.errors import LabError
from labweb.roles import CURATOR, any_role_required, curator_required, has_role
from labweb.web import add_lab_error, is_partial, render_fragments, submit

TEMPLATE = "curation/leaf_detail.html"


def get_leaf(pk: int) -> Leaf:
    return get_object_or_404(Leaf.objects.select_related("updated_by"), pk=pk)


def page_context(
    request: HttpRequest,
    leaf: Leaf,
    *,
    editor: Editor | None = None,
    errors: dict[str, list[dict]] | None = None,
    revision: Any = None,
) -> dict:
    if editor is None:
        editor = build_editor(leaf, list(leaf.seeds.order_by("position")))
    return {
        "leaf": leaf,
        "editor": editor,
        "documents": leaf_documents(leaf),
        "errors": errors or {},
        # A conflicting form keeps the revision it was made against, so resubmitting it conflicts again.
        "revision": revision or leaf.revision,
        "validate_url": reverse("curation:leaf_validate", args=[leaf.pk]) if has_role(request.user, CURATOR) else "",
    }


def saved(request: HttpRequest, leaf_pk: int, *, partial: str, anchor: str, message: str) -> HttpResponse:
    """After a write: htmx gets the partial it swaps plus every counter and revision token out of band;
    a plain form post is redirected back to the leaf page."""
    if is_partial(request):
        context = page_context(request, get_leaf(leaf_pk))
        context["oob_slots"] = _slots_outside(context["editor"], partial)
        return render_fragments(request, TEMPLATE, [partial, "refresh"], context)
    messages.success(request, message)
    return redirect(f"{reverse('curation:leaf_detail', args=[leaf_pk])}#{anchor}")


def _slots_outside(editor: Editor, partial: str) -> list:
    """The message slots that the swapped partial does not itself re-render (the status holds "version")."""
    inside = {"version"}
    if partial == "seeds":
        inside |= {name for name in editor.slots if name.startswith("seed_examples")}
    elif partial == "leaf-form":
        inside |= {i.slot.field for i in editor.inputs} | {"document"}
    return [slot for name, slot in editor.slots.items() if name not in inside]


def refused(
    request: HttpRequest,
    leaf: Leaf,
    *,
    partial: str,
    status: int,
    editor: Editor | None = None,
    errors: dict[str, list[dict]] | None = None,
    revision: Any = None,
) -> HttpResponse:
    """A write that changed nothing: the form again, as posted, with the reason beside its field."""
    context = page_context(request, leaf, editor=editor, errors=errors, revision=revision)
    if is_partial(request):
        return render_fragments(request, TEMPLATE, [partial], context, status=status)
    return render(request, TEMPLATE, context, status=status)


def conflict_revision(request: HttpRequest, status: int) -> Any:
    return request.POST.get("revision") if status == 409 else None


@require_GET
@any_role_required
def leaf_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, TEMPLATE, page_context(request, get_leaf(pk)))


@require_POST
@curator_required
def leaf_update(request: HttpRequest, pk: int) -> HttpResponse:
    leaf = get_leaf(pk)
    form = LeafFieldsForm(request.POST)
    _, errors, status = submit(
        form,
        lambda data: services.leaf_update(
            leaf=leaf, user=request.user, expected_revision=data["revision"], **form.changes(leaf)
        ),
    )
    if not errors:
        return saved(request, leaf.pk, partial="leaf-form", anchor="fields", message="Fields saved.")
    editor = build_editor(leaf, list(leaf.seeds.order_by("position")), posted=request.POST, errors=errors)
    return refused(
        request, leaf, partial="leaf-form", status=status, editor=editor, revision=conflict_revision(request, status)
    )


@require_POST
@curator_required
def leaf_validate(request: HttpRequest, pk: int) -> HttpResponse:
    """The problems the leaf would have with the posted values, beside their fields; nothing is saved."""
    leaf = get_leaf(pk)
    seeds = list(leaf.seeds.order_by("position"))
    seed = next((s for s in seeds if str(s.pk) == request.POST.get("seed")), None)
    if seed is not None:
        form = SeedForm(request.POST)
        form.is_valid()
        problems = preview_problems(leaf, seeds, seed_pk=seed.pk, seed_changes=form.changes(seed))
    else:
        form = LeafFieldsForm(request.POST)
        form.is_valid()
        problems = preview_problems(leaf, seeds, leaf_changes=form.changes(leaf))
    editor = build_editor(leaf, seeds, problems=problems)
    return render_fragments(request, TEMPLATE, ["live"], {**page_context(request, leaf, editor=editor), "live": True})


@require_http_methods(["GET", "POST"])
@curator_required
def leaf_create(request: HttpRequest) -> HttpResponse:
    form = LeafPathForm(request.POST or None, initial={"path": request.GET.get("path", "")})
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            try:
                leaf = services.leaf_create(path=form.cleaned_data["path"], user=request.user)
            except LabError as error:
                status = add_lab_error(form, error)
            else:
                messages.success(request, f"Created {leaf.path}. Add seed examples to make it valid.")
                return redirect("curation:leaf_detail", pk=leaf.pk)
    return render(request, "curation/leaf_create.html", {"form": form}, status=status)


@require_POST
@curator_required
def leaf_move(request: HttpRequest, pk: int) -> HttpResponse:
    leaf = get_leaf(pk)
    form = LeafMoveForm(request.POST)
    result, errors, status = submit(
        form,
        lambda data: services.leaf_move(
            leaf=leaf, new_path=data["path"], user=request.user, expected_revision=data["revision"]
        ),
    )
    if not errors:
        leaf = result
        messages.success(request, f"Moved to {leaf.path}.")
        return redirect("curation:leaf_detail", pk=leaf.pk)
    return refused(
        request,
        leaf,
        partial="actions",
        status=status,
        errors={"move": errors},
        revision=conflict_revision(request, status),
    )


@require_POST
@curator_required
def leaf_delete(request: HttpRequest, pk: int) -> HttpResponse:
    leaf = get_leaf(pk)
    form = LeafDeleteForm(request.POST)
    _, errors, status = submit(
        form, lambda data: services.leaf_delete(leaf=leaf, user=request.user, expected_revision=data["revision"])
    )
    if not errors:
        messages.success(request, f"Deleted {leaf.path}.")
        return redirect("curation:tree")
    return refused(
        request,
        leaf,
        partial="actions",
        status=status,
        errors={"delete": errors},
        revision=conflict_revision(request, status),
    )


@require_GET
@any_role_required
def leaf_yaml(request: HttpRequest, pk: int) -> HttpResponse:
    leaf = get_leaf(pk)
    return HttpResponse(
        dump_qna(leaf_qna(leaf, leaf.seeds.order_by("position"))), content_type="text/plain; charset=utf-8"
    )


def _leaf_or_deleted(pk: int) -> Leaf | DeletedLeaf:
    """The leaf, or what its history remembers of it once deleted: its history and revisions stay readable."""
    leaf = Leaf.objects.select_related("updated_by").filter(pk=pk).first() or deleted_leaf(pk)
    if leaf is None:
        raise Http404(f"No leaf {pk}.")
    return leaf


@require_GET
@any_role_required
def leaf_history(request: HttpRequest, pk: int) -> HttpResponse:
    leaf = _leaf_or_deleted(pk)
    page = Paginator(leaf_revisions(leaf).defer("snapshot"), 100).get_page(request.GET.get("page"))
    return render(request, "curation/leaf_history.html", {"leaf": leaf, "page": page})


@require_GET
@any_role_required
def leaf_revision(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    leaf = _leaf_or_deleted(pk)
    revision = leaf_revisions(leaf).filter(number=number).first()
    if revision is None:
        raise Http404(f"{leaf.path} has no revision {number}.")
    snapshot = revision.snapshot or {}
    qna = snapshot.get("qna") or {}
    fields = [(key, value) for key, value in qna.items() if key != "seed_examples"]
    return render(
        request,
        "curation/leaf_revision.html",
        {
            "leaf": leaf,
            "revision": revision,
            "snapshot": snapshot,
            "fields": fields,
            "seed_count": len(qna.get("seed_examples") or []),
            "yaml": dump_qna(qna),
            "documents": sorted((snapshot.get("documents") or {}).items()),
        },
    )


@require_GET
@any_role_required
def deleted_list(request: HttpRequest) -> HttpResponse:
    """Every deleted leaf, newest deletion first, each linked to the history it keeps."""
    page = Paginator(deleted_leaves(), 100).get_page(request.GET.get("page"))
    return render(request, "curation/deleted_leaves.html", {"page": page})
