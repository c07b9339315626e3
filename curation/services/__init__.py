"""Every write to the taxonomy goes through these functions, whoever calls: views, API, commands, tasks."""

from curation.services.documents import document_add, document_delete
from curation.services.imports import ImportSource, taxonomy_import, taxonomy_import_preview
from curation.services.leaves import leaf_create, leaf_delete, leaf_move, leaf_update
from curation.services.seeds import seed_add, seed_delete, seed_move, seed_update
from curation.services.snapshots import snapshot_create

__all__ = [
    "ImportSource",
    "document_add",
    "document_delete",
    "leaf_create",
    "leaf_delete",
    "leaf_move",
    "leaf_update",
    "seed_add",
    "seed_delete",
    "seed_move",
    "seed_update",
    "snapshot_create",
    "taxonomy_import",
    "taxonomy_import_preview",
]
