"""Seed examples of a leaf: each write re-renders the seed list (htmx) or redirects back to the leaf."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from curation import services
from curation.forms import RevisionForm, SeedForm, SeedMoveForm
from curation.models import SeedExample
from curation.views.editor import build_editor
from curation.views.leaves import conflict_revision, get_leaf, refused, saved
from labweb.roles import curator_required
from labweb.web import submit


def _seed(pk: int) -> SeedExample:
    return get_object_or_404(SeedExample.objects.select_related("leaf"), pk=pk)


@require_POST
@curator_required
def seed_update(request: HttpRequest, pk: int) -> HttpResponse:
    seed = _seed(pk)
    form = SeedForm(request.POST)
    _, errors, status = submit(
        form,
        lambda data: services.seed_update(
            seed=seed, user=request.user, expected_revision=data["revision"], **form.changes(seed)
        ),
    )
    if not errors:
        return saved(request, seed.leaf_id, partial="seeds", anchor=f"seed-{seed.pk}", message="Seed example saved.")
    leaf = get_leaf(seed.leaf_id)
    editor = build_editor(
        leaf, list(leaf.seeds.order_by("position")), posted=request.POST, posted_seed=seed.pk, errors=errors
    )
    return refused(
        request, leaf, partial="seeds", status=status, editor=editor, revision=conflict_revision(request, status)
    )


@require_POST
@curator_required
def seed_add(request: HttpRequest, pk: int) -> HttpResponse:
    leaf = get_leaf(pk)
    form = RevisionForm(request.POST)
    result, errors, status = submit(
        form, lambda data: services.seed_add(leaf=leaf, user=request.user, expected_revision=data["revision"])
    )
    if not errors:
        seed = result
        return saved(request, leaf.pk, partial="seeds", anchor=f"seed-{seed.pk}", message="Seed example added.")
    return refused(
        request,
        leaf,
        partial="seeds",
        status=status,
        errors={"seeds": errors},
        revision=conflict_revision(request, status),
    )


@require_POST
@curator_required
def seed_delete(request: HttpRequest, pk: int) -> HttpResponse:
    seed = _seed(pk)
    form = RevisionForm(request.POST)
    _, errors, status = submit(
        form, lambda data: services.seed_delete(seed=seed, user=request.user, expected_revision=data["revision"])
    )
    if not errors:
        return saved(request, seed.leaf_id, partial="seeds", anchor="seeds", message="Seed example deleted.")
    return refused(
        request,
        get_leaf(seed.leaf_id),
        partial="seeds",
        status=status,
        errors={"seeds": errors},
        revision=conflict_revision(request, status),
    )


@require_POST
@curator_required
def seed_move(request: HttpRequest, pk: int) -> HttpResponse:
    seed = _seed(pk)
    form = SeedMoveForm(request.POST)
    _, errors, status = submit(
        form,
        lambda data: services.seed_move(
            seed=seed, user=request.user, expected_revision=data["revision"], position=data["position"]
        ),
    )
    if not errors:
        return saved(request, seed.leaf_id, partial="seeds", anchor=f"seed-{seed.pk}", message="Seed example moved.")
    return refused(
        request,
        get_leaf(seed.leaf_id),
        partial="seeds",
        status=status,
        errors={"seeds": errors},
        revision=conflict_revision(request, status),
    )
