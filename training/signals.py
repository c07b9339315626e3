"""What training tells the apps above it (evaluation), without importing them."""

from django.dispatch import Signal

# Sent with `phase` once a phase has succeeded and its checkpoints are recorded.
phase_succeeded = Signal()
