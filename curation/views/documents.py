"""Markdown source documents attached to a leaf."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from curation import services
from curation.forms import DocumentForm, RevisionForm
from curation.models import Document
from curation.services.documents import MAX_DOCUMENT_BYTES
from curation.views.leaves import conflict_revision, get_leaf, refused, saved
from labweb.roles import any_role_required, curator_required
from labweb.web import submit


@require_POST
@curator_required
def document_add(request: HttpRequest, pk: int) -> HttpResponse:
    leaf = get_leaf(pk)
    form = DocumentForm(request.POST, request.FILES)
    # One byte past the limit is enough for the service to refuse an oversized file without reading it all.
    document, errors, status = submit(
        form,
        lambda data: services.document_add(
            leaf=leaf,
            user=request.user,
            expected_revision=data["revision"],
            name=data["file"].name,
            content=data["file"].read(MAX_DOCUMENT_BYTES + 1),
        ),
    )
    if not errors:
        return saved(request, leaf.pk, partial="documents", anchor="documents", message=f"{document.name} attached.")
    return refused(
        request,
        leaf,
        partial="documents",
        status=status,
        errors={"documents": errors},
        revision=conflict_revision(request, status),
    )


@require_POST
@curator_required
def document_delete(request: HttpRequest, pk: int) -> HttpResponse:
    document = get_object_or_404(Document.objects.defer("content"), pk=pk)
    form = RevisionForm(request.POST)
    _, errors, status = submit(
        form,
        lambda data: services.document_delete(document=document, user=request.user, expected_revision=data["revision"]),
    )
    if not errors:
        return saved(
            request, document.leaf_id, partial="documents", anchor="documents", message=f"{document.name} removed."
        )
    return refused(
        request,
        get_leaf(document.leaf_id),
        partial="documents",
        status=status,
        errors={"documents": errors},
        revision=conflict_revision(request, status),
    )


@require_GET
@any_role_required
def document_detail(request: HttpRequest, pk: int) -> HttpResponse:
    document = get_object_or_404(Document.objects.select_related("leaf", "created_by"), pk=pk)
    return render(request, "curation/document_detail.html", {"document": document, "leaf": document.leaf})
