"""Claims, so two reviewers do not work on the same samples: a batch is held for a time, then free again."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from labweb.errors import ConflictError, LabError
from review.core import rules
from review.models import ReviewItem
from review.queue import Queue

MAX_BATCH = 200


def claim_seconds() -> int:
    return getattr(settings, "LABWEB_REVIEW_CLAIM_SECONDS", 15 * 60)


def queue_claim(*, reviewer, queue: Queue, size: int = 20) -> list[int]:
    """Hold up to `size` pending samples of the queue for `reviewer`, in queue order; rows another reviewer is
    claiming at this moment are skipped (SKIP LOCKED), as are claims that have not expired. Returns their ids."""
    if not 1 <= size <= MAX_BATCH:
        raise LabError(f"A claim takes 1 to {MAX_BATCH} samples.", field="size")
    if queue.state != rules.PENDING:
        raise LabError("Only pending samples can be claimed.", field="state")
    now = timezone.now()
    with transaction.atomic():
        free = queue.queryset(reviewer=reviewer).filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now) | Q(claimed_by=reviewer)
        )
        ids = list(
            free.order_by(*queue.order)
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("sample_id", flat=True)[:size]
        )
        if not ids:
            raise ConflictError(
                "Nothing is left to claim in this queue: every pending sample is decided or held.", field="queue"
            )
        ReviewItem.objects.filter(sample_id__in=ids).update(
            claimed_by=reviewer, claimed_until=now + timedelta(seconds=claim_seconds())
        )
    return ids


def claims_release(*, reviewer) -> int:
    """Give back every sample the reviewer holds and has not decided."""
    return ReviewItem.objects.filter(claimed_by=reviewer).update(claimed_by=None, claimed_until=None)
