"""Decisions on one sample: approve, reject, edit and approve, and the undo of a reviewer's last decisions.

Every decision is a new `Decision` row; the item's state, text and version change in the same transaction,
under a row lock, and only when the caller saw the version that is current (optimistic locking).
"""

from collections import Counter as Tally
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from labweb.errors import ConflictError, LabError
from review.core import rules
from review.models import REASONS, BulkJob, Decision, ReviewItem, Vote
from review.services.counters import counters_move

REASON_CODES = {code for code, _ in REASONS}
MAX_TEXT = 20_000
UNDO_SCAN = 500  # how far back an undo looks for the reviewer's last decision still in force


class Gone(LabError):
    status = 404


def _who(user) -> str:
    return user.get_username() if user else "someone"


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S on %Y-%m-%d") if moment else "earlier"


def describe(decision: Decision | None) -> str:
    """'rene rejected it (off topic) at 12:03:04 on 2026-12-01': who decided what, for a conflict message."""
    if decision is None:
        return "it was changed"
    verb = {
        rules.APPROVE: "approved it",
        rules.REJECT: "rejected it",
        rules.EDIT: "edited and approved it",
        rules.UNDO: "took a decision on it back",
    }[decision.action]
    reason = dict(REASONS).get(decision.reason)
    detail = f" ({reason.lower()})" if reason else ""
    bulk = f" in bulk job {decision.job_id}" if decision.job_id else ""
    return f"{_who(decision.reviewer)} {verb}{detail}{bulk} at {_when(decision.created_at)}"


def _locked(sample_id: int) -> ReviewItem:
    item = (
        ReviewItem.objects.select_for_update(of=("self",))
        .select_related("decision__reviewer", "claimed_by", "sample")
        .filter(pk=sample_id)
        .first()
    )
    if item is None:
        raise Gone(f"Sample {sample_id} is gone: it was deleted, or never existed.", field="sample")
    return item


def _check_version(item: ReviewItem, expected_version: int | None) -> None:
    if expected_version is None:
        raise LabError(
            "Say which version of the sample you decided on (the form's version, or If-Match).", field="version"
        )
    if expected_version != item.version:
        raise ConflictError(
            f"Sample {item.pk} changed since you opened it (version {expected_version}, now {item.version}): "
            f"{describe(item.decision)}. Nothing was saved; look at it again.",
            field="version",
        )


def _check_claim(item: ReviewItem, reviewer, now: datetime) -> None:
    if item.claimed_by_id and item.claimed_by_id != reviewer.pk and item.claimed_until and item.claimed_until > now:
        raise ConflictError(
            f"Sample {item.pk} is claimed by {_who(item.claimed_by)} until {_when(item.claimed_until)}.",
            field="sample",
        )


def _clean_text(value: str | None, name: str) -> str:
    text = (value or "").replace("\r\n", "\n").strip()
    if not text:
        raise LabError(f"The edited {name} is empty.", field=name)
    if len(text) > MAX_TEXT:
        raise LabError(f"The edited {name} is longer than {MAX_TEXT} characters.", field=name)
    return text


def sample_decide(
    *,
    sample_id: int,
    reviewer,
    action: str,
    expected_version: int | None,
    reason: str = "",
    note: str = "",
    question: str | None = None,
    response: str | None = None,
) -> ReviewItem:
    """Approve, reject (with an optional reason from REASONS and free text) or edit-and-approve one sample.

    Preconditions: the sample exists, `expected_version` is its current version, it is not claimed by another
    reviewer, and it still waits for this reviewer's vote. An edit needs a non-empty question and answer that
    differ from the text in force.
    """
    if action not in rules.VOTES:
        raise LabError(f"Unknown action {action!r}: approve, reject or edit.", field="action")
    reason = (reason or "").strip()
    note = (note or "").strip()[:2000]
    if reason and reason not in REASON_CODES:
        raise LabError(f"Unknown reason {reason!r}: one of {', '.join(sorted(REASON_CODES))}.", field="reason")
    if action != rules.REJECT:
        reason = ""  # a reason says why a sample was rejected; a note may go with any decision
    now = timezone.now()
    with transaction.atomic():
        item = _locked(sample_id)
        _check_version(item, expected_version)
        _check_claim(item, reviewer, now)
        if item.state != rules.PENDING:
            raise ConflictError(
                f"Sample {item.pk} is already decided ({item.state}): {describe(item.decision)}. "
                "Undo that decision first to change it.",
                field="sample",
            )
        if item.required > 1 and Vote.objects.filter(item=item, reviewer=reviewer).exists():
            raise ConflictError(f"You already voted on sample {item.pk}; it waits for other reviewers.", field="sample")

        decision = Decision(item=item, reviewer=reviewer, action=action, reason=reason, note=note, created_at=now)
        text = None
        if action == rules.EDIT:
            before_q = item.question if item.question is not None else item.sample.question
            before_r = item.response if item.response is not None else item.sample.response
            after_q, after_r = _clean_text(question, "question"), _clean_text(response, "response")
            if (after_q, after_r) == (before_q.strip(), before_r.strip()):
                raise LabError(
                    "The edit changes nothing: change the question or the answer, or approve.", field="response"
                )
            decision.question_before, decision.question_after = before_q, after_q
            decision.response_before, decision.response_after = before_r, after_r
            text = (after_q, after_r)

        if item.required > 1:
            votes = list(Vote.objects.filter(item=item).values_list("action", flat=True)) + [action]
            state = rules.state_for(votes, required=item.required, rule=item.rule)
        else:
            votes = [action]
            state = rules.state_after(action)
        decision.state_after = state
        decision.save()
        if item.required > 1:
            Vote.objects.create(item=item, reviewer=reviewer, decision=decision, action=action)
        before = item.state
        item.state = state
        item.votes = len(votes)
        item.version += 1
        item.decision = decision
        item.decided_at = now
        if text:
            item.question, item.response = text
        item.claimed_by = None
        item.claimed_until = None
        item.save(
            update_fields=[
                "state",
                "votes",
                "version",
                "decision",
                "decided_at",
                "question",
                "response",
                "claimed_by",
                "claimed_until",
            ]
        )
        counters_move(Tally({(item.run_id, item.leaf_path, item.leaf_id, before, state): 1}))
    return item


def _in_force(decision: Decision) -> bool:
    """Whether `decision` still counts: the item's current decision (one reviewer) or the reviewer's vote."""
    if decision.item.required > 1:
        return Vote.objects.filter(decision=decision).exists()
    return decision.item.decision_id == decision.pk


def last_decisions(*, reviewer, limit: int = 1) -> list[Decision]:
    """The reviewer's latest decisions still in force, newest first; a bulk job that is done counts once, by its
    last decision (its rows are not in the reviewer's index of decisions: the job stands for them)."""
    found: list[Decision] = []
    recent = (
        Decision.objects.filter(reviewer=reviewer, job__isnull=True)
        .exclude(action=rules.UNDO)
        .select_related("item")
        .order_by("-id")[:UNDO_SCAN]
    )
    for decision in recent:
        if len(found) >= limit:
            break
        if _in_force(decision):
            found.append(decision)
    jobs = list(
        BulkJob.objects.filter(reviewer=reviewer, status=BulkJob.Status.DONE, last_decision__isnull=False)
        .order_by("-last_decision")
        .values_list("last_decision", flat=True)[:limit]
    )
    found += Decision.objects.filter(pk__in=jobs).select_related("item", "job")
    return sorted(found, key=lambda decision: -decision.pk)[:limit]


def _undo_one(decision: Decision, reviewer, now: datetime) -> Decision:
    item = _locked(decision.item_id)
    if decision.item.required > 1:
        vote = Vote.objects.filter(decision=decision).first()
        if vote is None:
            raise ConflictError(f"That vote on sample {item.pk} was already taken back.", field="sample")
        vote.delete()
        remaining = list(Vote.objects.filter(item=item).select_related("decision").order_by("decision_id"))
        state = rules.state_for([v.action for v in remaining], required=item.required, rule=item.rule)
        edits = [v.decision for v in remaining if v.action == rules.EDIT]
        text = (edits[-1].question_after, edits[-1].response_after) if edits else (None, None)
        votes = len(remaining)
    else:
        if item.decision_id != decision.pk:
            raise ConflictError(f"Sample {item.pk} changed since: {describe(item.decision)}.", field="sample")
        state, text, votes = rules.PENDING, (None, None), 0
    undo = Decision.objects.create(
        item=item,
        reviewer=reviewer,
        action=rules.UNDO,
        undoes=decision,
        state_after=state,
        created_at=now,
    )
    if decision.action == rules.EDIT:
        undo.question_before, undo.response_before = item.question, item.response
        undo.question_after = text[0] if text[0] is not None else item.sample.question
        undo.response_after = text[1] if text[1] is not None else item.sample.response
        undo.save(update_fields=["question_before", "response_before", "question_after", "response_after"])
    before = item.state
    item.state = state
    item.votes = votes
    item.question, item.response = text
    item.version += 1
    item.decision = undo
    item.decided_at = now if state != rules.PENDING else None
    item.save(update_fields=["state", "votes", "question", "response", "version", "decision", "decided_at"])
    counters_move(Tally({(item.run_id, item.leaf_path, item.leaf_id, before, state): 1}))
    return undo


def decision_undo(*, reviewer, steps: int = 1) -> list[Decision]:
    """Take back the reviewer's last `steps` decisions still in force, newest first. A decision that was part
    of a bulk job takes the whole job back (queued: it runs as the job did). Returns the decisions taken back.
    """
    from review.services.bulk import bulk_undo

    if not 1 <= steps <= 100:
        raise LabError("Undo takes back 1 to 100 decisions at a time.", field="steps")
    now = timezone.now()
    with transaction.atomic():
        targets = last_decisions(reviewer=reviewer, limit=steps)
        if not targets:
            raise LabError("You have no decision left to undo.", field="steps")
        for decision in targets:
            if decision.job_id:
                bulk_undo(job=decision.job, reviewer=reviewer)
            else:
                _undo_one(decision, reviewer, now)
    return targets


def sweeps_of(item: ReviewItem, decisions: list[Decision]) -> list[Decision]:
    """The sweeps (bulk undos, one row a chunk) over `item` of the jobs among its `decisions`."""
    jobs = {decision.job_id for decision in decisions if decision.job_id}
    if not jobs:
        return []
    return list(
        Decision.objects.filter(
            item__isnull=True, job_id__in=jobs, samples_after__lt=item.pk, samples_through__gte=item.pk
        ).order_by("id")
    )


def replay_state(item: ReviewItem) -> tuple[str, str | None, str | None]:
    """(state, edited question, edited response) as the item's decisions alone say, replayed in order: its own
    rows, and the sweeps of its bulk jobs' undos."""
    own = list(item.decisions.all())
    votes: dict[int, Decision] = {}
    for decision in sorted(own + sweeps_of(item, own), key=lambda d: d.pk):
        if decision.is_sweep:
            for reviewer_id, standing in list(votes.items()):
                if decision.sweeps(standing):
                    del votes[reviewer_id]
        elif decision.action == rules.UNDO:
            undone = decision.undoes
            if votes.get(undone.reviewer_id) and votes[undone.reviewer_id].pk == undone.pk:
                del votes[undone.reviewer_id]
        else:
            votes[decision.reviewer_id] = decision
    standing = sorted(votes.values(), key=lambda d: d.pk)
    state = rules.state_for([d.action for d in standing], required=item.required, rule=item.rule)
    edits = [d for d in standing if d.action == rules.EDIT]
    if edits:
        return state, edits[-1].question_after, edits[-1].response_after
    return state, None, None
