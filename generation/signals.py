"""What generation tells the apps above it, without importing them."""

from django.dispatch import Signal

# Sent inside the transaction that wrote a work item's samples, with `item` (the WorkItem). Review connects
# to it to open its rows for the new samples in that same transaction.
samples_written = Signal()

# Sent inside the transaction that marked near-duplicates of a run (`run_id`), once it completed.
duplicates_marked = Signal()
