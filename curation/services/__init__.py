"""Every write to the taxonomy goes through these functions, whoever calls: views, API, commands, tasks."""

from curation.services.imports import taxonomy_import
from curation.services.leaves import (
    document_add,
    document_delete,
    leaf_create,
    leaf_delete,
    leaf_move,
    leaf_update,
    seed_add,
    seed_delete,
    seed_move,
    seed_update,
    snapshot_create,
)

__all__ = [
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
]
