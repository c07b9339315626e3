"""The per-leaf, per-run counters, moved in the same transaction as the decisions they count."""

from collections import Counter as Tally

from django.db.models import F

from review.models import Counter

FIELDS = ("pending", "approved", "rejected", "edited")


def counters_move(moves: Tally) -> None:
    """Apply `moves`: {(run_id, leaf_path, leaf_id, from_state, to_state): n}; from_state None opens new rows."""
    deltas: dict[tuple, Tally] = {}
    for (run_id, leaf_path, leaf_id, before, after), n in moves.items():
        if before == after or not n:
            continue
        delta = deltas.setdefault((run_id, leaf_path, leaf_id), Tally())
        if before:
            delta[before] -= n
        delta[after] += n
    for (run_id, leaf_path, leaf_id), delta in deltas.items():
        changes = {name: F(name) + value for name, value in delta.items() if value}
        if not changes:
            continue
        updated = Counter.objects.filter(run_id=run_id, leaf_path=leaf_path).update(**changes)
        if not updated:
            Counter.objects.get_or_create(run_id=run_id, leaf_path=leaf_path, defaults={"leaf_id": leaf_id})
            Counter.objects.filter(run_id=run_id, leaf_path=leaf_path).update(**changes)
