"""The export archive, as the Export button and `GET /api/export/` both serve it."""

import tempfile

from django.http import FileResponse, HttpRequest
from django.views.decorators.http import require_GET

from curation.selectors import TaxonomyExport, taxonomy_export
from labweb.roles import any_role_required

# The archive stays in memory up to this size, and goes to a temporary file on disk past it.
SPOOL_BYTES = 8 * 1024 * 1024


def export_response(export: TaxonomyExport) -> FileResponse:
    """Every valid leaf as an InstructLab taxonomy (.tar.gz); invalid leaves are left out and counted in a header.

    The archive is written whole, leaf by leaf, into a spooled temporary file before the first byte goes out,
    then streamed from it: an export that fails is an error answer rather than an archive cut off mid-way (which
    streaming as it is made would send), the database is read in one short snapshot rather than at the client's
    pace, and the web process holds a chunk of leaves and at most SPOOL_BYTES of archive, not the whole of it."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    try:
        export.write_tar(spool)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    # FileResponse closes the file (and so removes what went to disk) once the response is closed.
    response = FileResponse(spool, as_attachment=True, filename=export.FILENAME, content_type="application/gzip")
    response.block_size = 1 << 16  # read back 64 KiB at a time, not FileResponse's 4 KiB
    response["X-LabWeb-Skipped-Invalid"] = str(export.skipped)
    return response


@require_GET
@any_role_required
def export(request: HttpRequest) -> FileResponse:
    return export_response(taxonomy_export())
