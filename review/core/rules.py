"""What a sample's state is, given the votes of its reviewers and the queue's rule."""

from collections.abc import Iterable

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EDITED = "edited"
STATES = (PENDING, APPROVED, REJECTED, EDITED)

APPROVE = "approve"
REJECT = "reject"
EDIT = "edit"
UNDO = "undo"
VOTES = (APPROVE, REJECT, EDIT)

UNANIMOUS = "unanimous"
MAJORITY = "majority"
RULES = (UNANIMOUS, MAJORITY)


def state_for(votes: Iterable[str], *, required: int, rule: str) -> str:
    """The state `votes` (one per reviewer: approve, reject or edit) give a sample that needs `required` of them.

    Fewer votes than required: pending. Unanimous: approved only when every vote approves, else rejected.
    Majority: approved when more than half approve, else rejected (a tie rejects: keeping a sample needs a
    majority for it). An approval in which any approving reviewer edited the text is "edited".
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}")
    if required < 1:
        raise ValueError("a sample needs at least one reviewer")
    votes = list(votes)
    unknown = set(votes) - set(VOTES)
    if unknown:
        raise ValueError(f"not votes: {sorted(unknown)}")
    if len(votes) < required:
        return PENDING
    approving = [vote for vote in votes if vote != REJECT]
    kept = len(approving) == len(votes) if rule == UNANIMOUS else 2 * len(approving) > len(votes)
    if not kept:
        return REJECTED
    return EDITED if EDIT in approving else APPROVED


def state_after(action: str) -> str:
    """The state one vote gives a sample that needs one reviewer."""
    return state_for([action], required=1, rule=UNANIMOUS)
