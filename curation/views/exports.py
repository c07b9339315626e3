"""The export archive, as the Export button and `GET /api/export/` both serve it."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from curation.selectors import TaxonomyExport, taxonomy_export
from labweb.roles import any_role_required


def export_response(export: TaxonomyExport) -> HttpResponse:
    """Every valid leaf as an InstructLab taxonomy (.tar.gz); invalid leaves are left out and counted in a header."""
    response = HttpResponse(export.tar_bytes(), content_type="application/gzip")
    response["Content-Disposition"] = f'attachment; filename="{export.FILENAME}"'
    response["X-LabWeb-Skipped-Invalid"] = str(len(export.skipped))
    return response


@require_GET
@any_role_required
def export(request: HttpRequest) -> HttpResponse:
    return export_response(taxonomy_export())
