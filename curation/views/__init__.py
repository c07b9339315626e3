"""HTML pages of the taxonomy curation: one small view per URL; writes go through curation.services."""

from curation.views.documents import document_add, document_delete, document_detail
from curation.views.exports import export
from curation.views.imports import (
    import_confirm,
    import_detail,
    import_job,
    import_job_cancel,
    import_list,
    import_start,
)
from curation.views.leaves import (
    deleted_list,
    leaf_create,
    leaf_delete,
    leaf_detail,
    leaf_history,
    leaf_move,
    leaf_revision,
    leaf_update,
    leaf_validate,
    leaf_yaml,
)
from curation.views.seeds import seed_add, seed_delete, seed_move, seed_update
from curation.views.tree import diff, snapshot_create, tree, tree_children

__all__ = [
    "deleted_list",
    "diff",
    "document_add",
    "document_delete",
    "document_detail",
    "export",
    "import_confirm",
    "import_detail",
    "import_job",
    "import_job_cancel",
    "import_list",
    "import_start",
    "leaf_create",
    "leaf_delete",
    "leaf_detail",
    "leaf_history",
    "leaf_move",
    "leaf_revision",
    "leaf_update",
    "leaf_validate",
    "leaf_yaml",
    "seed_add",
    "seed_delete",
    "seed_move",
    "seed_update",
    "snapshot_create",
    "tree",
    "tree_children",
]
