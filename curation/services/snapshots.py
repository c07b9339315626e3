"""Named baselines of the whole taxonomy, for diff."""

from curation.models import Leaf, TaxonomySnapshot
from labweb.errors import LabError


def snapshot_create(*, name: str, user) -> TaxonomySnapshot:
    """Record the current content hash of every leaf as a named baseline for diff."""
    if not (name or "").strip():
        raise LabError("A snapshot needs a name.", field="name")
    return TaxonomySnapshot.objects.create(
        name=name.strip(), created_by=user, hashes=dict(Leaf.objects.values_list("path", "content_hash"))
    )
