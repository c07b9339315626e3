"""The taxonomy tree with search, and the diff against a baseline snapshot."""

from django.contrib import messages
from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from curation import services
from curation.forms import SnapshotForm
from curation.models import Kind
from curation.selectors import (
    history_ids_by_path,
    kind_counts,
    leaf_ids_by_path,
    leaf_list,
    snapshot_by_id,
    snapshot_list,
    taxonomy_diff,
)
from curation.tree import folder_contents, tree_open
from labweb.errors import LabError
from labweb.roles import any_role_required, curator_required
from labweb.web import is_partial, submit

SEARCH_LIMIT = 200
TREE_TEMPLATE = "curation/tree.html"


def _ancestors(path: str) -> set[str]:
    parts = [part for part in path.split("/") if part]
    return {"/".join(parts[:end]) for end in range(1, len(parts) + 1)}


def _text_param(request: HttpRequest, name: str) -> str:
    value = request.GET.get(name, "")
    if "\x00" in value:
        raise BadRequest(f"{name} holds a NUL character.")
    return value


def _search(q: str) -> dict:
    matches = leaf_list(q=q).only("id", "path", "kind", "is_valid")
    return {"results": list(matches[:SEARCH_LIMIT]), "total": matches.count()}


@require_GET
@any_role_required
def tree(request: HttpRequest) -> HttpResponse:
    """Roots plus the folders on the path in `?open=`; deeper folders load on demand (`tree_children`)."""
    q = _text_param(request, "q").strip()
    open_path = _text_param(request, "open").strip("/")
    context: dict = {"q": q, "open_path": open_path, "open_paths": _ancestors(open_path)}
    if q:
        context.update(_search(q))
    else:
        context["root"] = tree_open(open_path)
    if is_partial(request):
        return render(request, f"{TREE_TEMPLATE}#tree-body", context)
    if q:
        counts = kind_counts()
    else:
        counts = {child.path: {"leaves": child.leaves, "invalid": child.invalid} for child in context["root"].children}
    context["kinds"] = [(kind, label, counts[kind]) for kind, label in Kind.choices]
    context["totals"] = {
        "leaves": sum(c["leaves"] for c in counts.values()),
        "invalid": sum(c["invalid"] for c in counts.values()),
    }
    return render(request, TREE_TEMPLATE, context)


@require_GET
@any_role_required
def tree_children(request: HttpRequest) -> HttpResponse:
    path = _text_param(request, "path").strip("/")
    if not is_partial(request):
        return redirect(f"{reverse('curation:tree')}?{urlencode({'open': path})}")
    folder = folder_contents(path)
    if folder is None:
        raise Http404(f"No folder {path} in the taxonomy.")
    return render(request, f"{TREE_TEMPLATE}#children", {"folder": folder, "open_paths": set()})


def _diff_page(request: HttpRequest, *, errors: list[dict] = (), status: int = 200, name: str = "") -> HttpResponse:
    try:
        baseline = snapshot_by_id(request.GET.get("baseline", ""))
    except LabError as error:
        baseline, errors, status = None, [*errors, error.as_dict()], 400
    diff = taxonomy_diff(baseline=baseline)
    ids = leaf_ids_by_path(diff.added + diff.modified)
    gone = history_ids_by_path(diff.removed)
    return render(
        request,
        "curation/diff.html",
        {
            "diff": diff,
            "added": [(path, ids.get(path)) for path in diff.added],
            "modified": [(path, ids.get(path)) for path in diff.modified],
            "removed": [(path, gone.get(path)) for path in diff.removed],
            "snapshots": snapshot_list()[:200],
            "errors": errors,
            "name": name,
        },
        status=status,
    )


@require_GET
@any_role_required
def diff(request: HttpRequest) -> HttpResponse:
    return _diff_page(request)


@require_POST
@curator_required
def snapshot_create(request: HttpRequest) -> HttpResponse:
    form = SnapshotForm(request.POST)
    name = request.POST.get("name", "")
    snapshot, errors, status = submit(form, lambda data: services.snapshot_create(name=data["name"], user=request.user))
    if errors:
        return _diff_page(request, errors=errors, status=status, name=name)
    messages.success(request, f"Snapshot “{snapshot.name}” saved; the diff now compares against it.")
    return redirect(f"{reverse('curation:diff')}?{urlencode({'baseline': snapshot.pk})}")
