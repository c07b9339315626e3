"""Decisions through the services: state, text, version and counters move together; bad input changes nothing."""

import io
import random

import pytest

from labweb.errors import ConflictError, LabError
from review.models import BulkJob, Decision, ReviewItem, ReviewPolicy
from review.queue import Queue
from review.services import bulk
from review.services.decisions import Gone, decision_undo, sample_decide
from tests.support.review import assert_consistent, taken_back

pytestmark = pytest.mark.django_db


def first(**filters) -> ReviewItem:
    return ReviewItem.objects.filter(**filters).order_by("pk").first()


def snapshot() -> tuple:
    return (
        list(ReviewItem.objects.order_by("pk").values_list("pk", "state", "version", "question", "response")),
        Decision.objects.count(),
        BulkJob.objects.count(),
    )


def test_new_samples_open_pending_items_with_their_queue_keys(make_samples):
    run = make_samples(2)
    item = first()
    sample = item.sample
    assert ReviewItem.objects.filter(run=run).count() == 30
    assert (item.leaf_path, item.kind, item.teacher_model, item.state) == (
        sample.leaf_path,
        "skills",
        "teacher-model",
        "pending",
    )
    assert item.score == sample.scores["pair"]
    assert_consistent()


def test_approve_reject_edit_and_undo_keep_state_text_and_counters_in_step(make_samples, reviewer):
    make_samples(1)
    a, b, c = ReviewItem.objects.order_by("pk")[:3]
    sample_decide(sample_id=a.pk, reviewer=reviewer, action="approve", expected_version=1)
    sample_decide(
        sample_id=b.pk, reviewer=reviewer, action="reject", expected_version=1, reason="off_topic", note="not a poem"
    )
    edited = sample_decide(
        sample_id=c.pk,
        reviewer=reviewer,
        action="edit",
        expected_version=1,
        question="A better question?",
        response="A better answer.",
    )
    assert (edited.state, edited.question, edited.version) == ("edited", "A better question?", 2)
    assert edited.sample.question.startswith("Question")  # the original stays beside the edit
    decision = Decision.objects.get(item=c, action="edit")
    assert decision.question_before == c.sample.question and decision.response_after == "A better answer."
    assert Decision.objects.get(item=b).reason == "off_topic"
    assert_consistent()

    undone = decision_undo(reviewer=reviewer, steps=2)  # newest first: the edit, then the reject
    assert [d.item_id for d in undone] == [c.pk, b.pk]
    c.refresh_from_db()
    assert (c.state, c.question, c.response, c.version) == ("pending", None, None, 3)
    assert first(pk=a.pk).state == "approved"
    assert_consistent()
    decision_undo(reviewer=reviewer)
    assert first(pk=a.pk).state == "pending"
    with pytest.raises(LabError, match="no decision left"):
        decision_undo(reviewer=reviewer)
    assert_consistent()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sample_id": 10**9}, Gone, "is gone"),
        ({"expected_version": 7}, ConflictError, "changed since you opened it"),
        ({"expected_version": None}, LabError, "which version"),
        ({"action": "reject", "reason": "boring"}, LabError, "Unknown reason"),
        ({"action": "maybe"}, LabError, "Unknown action"),
        ({"action": "edit", "question": "  ", "response": "x"}, LabError, "edited question is empty"),
        ({"action": "edit", "question": "q", "response": ""}, LabError, "edited response is empty"),
    ],
    ids=["gone", "stale", "no-version", "unknown-reason", "unknown-action", "empty-question", "empty-answer"],
)
def test_bad_decisions_are_refused_and_change_nothing(make_samples, reviewer, kwargs, error, match):
    make_samples(1)
    item = first()
    args = {"sample_id": item.pk, "reviewer": reviewer, "action": "approve", "expected_version": 1} | kwargs
    before = snapshot()
    with pytest.raises(error, match=match):
        sample_decide(**args)
    assert snapshot() == before


def test_an_edit_that_changes_nothing_is_refused(make_samples, reviewer):
    make_samples(1)
    item = first()
    with pytest.raises(LabError, match="changes nothing"):
        sample_decide(
            sample_id=item.pk,
            reviewer=reviewer,
            action="edit",
            expected_version=1,
            question=item.sample.question,
            response=item.sample.response + "  ",
        )


def test_a_second_reviewer_is_told_who_decided_what(make_samples, reviewer, second_reviewer):
    make_samples(1)
    item = first()
    sample_decide(sample_id=item.pk, reviewer=reviewer, action="reject", expected_version=1, reason="incorrect")
    before = snapshot()
    with pytest.raises(ConflictError, match=r"rene rejected it \(incorrect answer\)"):
        sample_decide(sample_id=item.pk, reviewer=second_reviewer, action="approve", expected_version=1)
    with pytest.raises(ConflictError, match="already decided"):
        sample_decide(sample_id=item.pk, reviewer=second_reviewer, action="approve", expected_version=2)
    assert snapshot() == before


def test_two_of_two_unanimous_waits_for_both_votes_and_keeps_each_vote(make_samples, reviewer, second_reviewer):
    make_samples(1, required=2, rule="unanimous")
    item = first()
    assert item.required == 2
    after_one = sample_decide(sample_id=item.pk, reviewer=reviewer, action="approve", expected_version=1)
    assert (after_one.state, after_one.votes) == ("pending", 1)
    with pytest.raises(ConflictError, match="already voted"):
        sample_decide(sample_id=item.pk, reviewer=reviewer, action="approve", expected_version=2)
    mine = Queue().queryset(reviewer=reviewer)
    assert not mine.filter(pk=item.pk).exists()  # not in the first reviewer's queue again
    assert Queue().queryset(reviewer=second_reviewer).filter(pk=item.pk).exists()
    final = sample_decide(sample_id=item.pk, reviewer=second_reviewer, action="reject", expected_version=2)
    assert final.state == "rejected"
    decision_undo(reviewer=second_reviewer)
    assert first(pk=item.pk).state == "pending"
    assert_consistent()


def test_majority_of_three(make_samples, reviewer, second_reviewer):
    from tests.conftest import _user

    third = _user("ruth", "reviewer")
    make_samples(1, required=3, rule="majority")
    item = first()
    for version, (user, action) in enumerate([(reviewer, "approve"), (second_reviewer, "reject"), (third, "edit")], 1):
        kwargs = {"question": "Q?", "response": "A."} if action == "edit" else {}
        result = sample_decide(sample_id=item.pk, reviewer=user, action=action, expected_version=version, **kwargs)
    assert (result.state, result.question) == ("edited", "Q?")
    assert_consistent()


def test_claims_keep_other_reviewers_off(make_samples, reviewer, second_reviewer):
    from review.services.claims import queue_claim

    make_samples(1)  # 15 samples
    mine = queue_claim(reviewer=reviewer, queue=Queue(), size=10)
    theirs = queue_claim(reviewer=second_reviewer, queue=Queue(), size=10)
    assert (len(mine), len(theirs)) == (10, 5) and not set(mine) & set(theirs)
    with pytest.raises(ConflictError, match="claimed by rene"):
        sample_decide(sample_id=mine[0], reviewer=second_reviewer, action="approve", expected_version=1)
    from tests.conftest import _user

    with pytest.raises(ConflictError, match="Nothing is left to claim"):
        queue_claim(reviewer=_user("ruth", "reviewer"), queue=Queue(), size=1)


def test_expired_claims_are_free_again(make_samples, reviewer, second_reviewer, settings):
    from review.services.claims import queue_claim

    make_samples(1)
    settings.LABWEB_REVIEW_CLAIM_SECONDS = -1  # claims that expired the moment they were made
    mine = queue_claim(reviewer=reviewer, queue=Queue(), size=15)
    theirs = queue_claim(reviewer=second_reviewer, queue=Queue(), size=15)
    assert set(mine) == set(theirs)


def test_bulk_by_filter_minus_some_and_its_undo(make_samples, reviewer, eager, django_capture_on_commit_callbacks):
    make_samples(2)
    queue = Queue(path="compositional_skills/writing")
    excluded = list(
        ReviewItem.objects.filter(leaf_path__startswith="compositional_skills/writing/")
        .order_by("pk")
        .values_list("pk", flat=True)[:3]
    )
    count, ceiling = bulk.bulk_preview(queue=queue, selected=[], excluded=excluded, reviewer=reviewer)
    assert count == 20 - 3
    with django_capture_on_commit_callbacks(execute=True):
        job = bulk.bulk_create(
            reviewer=reviewer, action="approve", queue=queue, excluded=excluded, expected=count, ceiling=ceiling
        )
    job.refresh_from_db()
    assert (job.status, job.done) == ("done", 17)
    assert ReviewItem.objects.filter(state="approved").count() == 17
    assert not ReviewItem.objects.filter(pk__in=excluded).exclude(state="pending").exists()
    assert not ReviewItem.objects.filter(leaf_path="compositional_skills/other/x").exclude(state="pending").exists()
    assert_consistent()

    # Run again (a redelivered task): nothing more happens.
    assert bulk.bulk_run(job_id=job.pk).done == 17
    with django_capture_on_commit_callbacks(execute=True):
        decision_undo(reviewer=reviewer)  # the last decision was the bulk one: the whole job is taken back
    job.refresh_from_db()
    assert (job.status, job.undone) == ("undone", 17)
    assert ReviewItem.objects.filter(state="pending").count() == 30
    assert_consistent()
    with pytest.raises(ConflictError, match="already undone"):
        bulk.bulk_undo(job=job, reviewer=reviewer)


def job_decisions(job, action: str) -> list[int]:
    return list(Decision.objects.filter(job=job, action=action).values_list("item_id", flat=True))


def one_chunk_then_die(job, chunk: int) -> tuple[str, int, int]:
    """What a worker leaves that commits one chunk and is killed: (status, done, undone), counters in step."""
    assert bulk.bulk_step(job.pk, chunk=chunk)
    job.refresh_from_db()
    assert_consistent()
    return job.status, job.done, job.undone


def test_a_bulk_interrupted_between_chunks_resumes_without_duplicates_and_undoes_as_a_whole(
    make_samples, reviewer, django_capture_on_commit_callbacks
):
    make_samples(2)  # 30 samples
    queue = Queue(path="compositional_skills/writing")
    count, ceiling = bulk.bulk_preview(queue=queue, selected=[], excluded=[], reviewer=reviewer)
    with django_capture_on_commit_callbacks(execute=False):  # queued, and no worker has taken it yet
        job = bulk.bulk_create(reviewer=reviewer, action="reject", queue=queue, expected=count, ceiling=ceiling)
    assert job.slices.filter(undo=False).count() == bulk.WORKERS

    # A worker commits one chunk of 4 and dies: the job shows its progress, and the counters hold.
    assert one_chunk_then_die(job, 4) == ("running", 4, 0)

    # The task is delivered again: the job resumes from each slice's cursor, and no sample is decided twice.
    job = bulk.bulk_run(job_id=job.pk, chunk=4)
    decided = job_decisions(job, "reject")
    assert (job.status, job.done, len(decided)) == ("done", 20, 20)
    assert len(set(decided)) == 20
    assert ReviewItem.objects.filter(state="rejected").count() == 20
    assert_consistent()
    assert bulk.bulk_run(job_id=job.pk, chunk=4).done == 20

    # Its undo, interrupted the same way, then resumed: every decision taken back once, and only once.
    with django_capture_on_commit_callbacks(execute=False):
        bulk.bulk_undo(job=job, reviewer=reviewer)
    assert one_chunk_then_die(job, 3) == ("undoing", 20, 3)
    job = bulk.bulk_undo_run(job_id=job.pk, chunk=3)
    undone = taken_back(job)
    assert (job.status, job.undone, sorted(undone)) == ("undone", 20, sorted(decided))
    assert set(undone.values()) == {1}
    assert ReviewItem.objects.filter(state="pending").count() == 30
    assert_consistent()
    assert bulk.bulk_undo_run(job_id=job.pk, chunk=3).undone == 20
    assert taken_back(job) == undone


def test_undo_from_the_keyboard_finds_a_decision_made_before_a_bulk_job(
    make_samples, reviewer, eager, django_capture_on_commit_callbacks
):
    make_samples(2)
    own = first(leaf_path="compositional_skills/other/x")
    sample_decide(sample_id=own.pk, reviewer=reviewer, action="approve", expected_version=1)
    queue = Queue(path="compositional_skills/writing")
    count, ceiling = bulk.bulk_preview(queue=queue, selected=[], excluded=[], reviewer=reviewer)
    with django_capture_on_commit_callbacks(execute=True):
        job = bulk.bulk_create(reviewer=reviewer, action="approve", queue=queue, expected=count, ceiling=ceiling)
    with django_capture_on_commit_callbacks(execute=True):
        undone = decision_undo(reviewer=reviewer, steps=2)  # newest first: the bulk job, then the approval
    assert [d.job_id for d in undone] == [job.pk, None] and undone[1].item_id == own.pk
    assert ReviewItem.objects.filter(state="pending").count() == 30
    assert_consistent()


def test_bulk_that_matches_nothing_or_a_moved_count_is_refused(make_samples, reviewer):
    make_samples(1)
    before = snapshot()
    with pytest.raises(LabError, match="nothing to decide"):
        bulk.bulk_preview(queue=Queue(path="no/such/branch"), selected=[], excluded=[], reviewer=reviewer)
    with pytest.raises(ConflictError, match="confirm again"):
        bulk.bulk_create(reviewer=reviewer, action="approve", queue=Queue(), expected=3)
    with pytest.raises(LabError, match="approves or rejects"):
        bulk.bulk_create(reviewer=reviewer, action="edit", queue=Queue(), expected=15)
    assert snapshot() == before


def test_bulk_leaves_samples_that_need_several_reviewers(
    make_samples, reviewer, eager, django_capture_on_commit_callbacks
):
    make_samples(1)
    make_samples(1, required=2)
    count, _ = bulk.bulk_preview(queue=Queue(), selected=[], excluded=[], reviewer=reviewer)
    assert count == 15


def test_random_decisions_never_drift_from_their_records(
    make_samples, reviewer, second_reviewer, eager, django_capture_on_commit_callbacks
):
    make_samples(2)
    make_samples(1, required=2, rule="majority")
    chance = random.Random(14)
    users = [reviewer, second_reviewer]
    for _ in range(120):
        user = chance.choice(users)
        move = chance.random()
        try:
            if move < 0.2:
                decision_undo(reviewer=user, steps=chance.randint(1, 3))
                continue
            if move < 0.25:
                queue = Queue(path=chance.choice(["compositional_skills/writing", "compositional_skills/other"]))
                count, ceiling = bulk.bulk_preview(queue=queue, selected=[], excluded=[], reviewer=user)
                with django_capture_on_commit_callbacks(execute=True):
                    bulk.bulk_create(
                        reviewer=user,
                        action=chance.choice(["approve", "reject"]),
                        queue=queue,
                        expected=count,
                        ceiling=ceiling,
                    )
                continue
            item = chance.choice(list(ReviewItem.objects.all()))
            action = chance.choice(["approve", "reject", "edit"])
            text = {"question": f"Q {chance.random()}", "response": "R"} if action == "edit" else {}
            sample_decide(sample_id=item.pk, reviewer=user, action=action, expected_version=item.version, **text)
        except LabError:
            pass
    assert Decision.objects.count() > 60
    assert_consistent()


def test_policy_sets_reviewers_per_sample_for_new_samples(make_samples):
    run = make_samples(1, required=3, rule="majority")
    assert ReviewPolicy.objects.get(run=run).required == 3
    assert set(ReviewItem.objects.filter(run=run).values_list("required", "rule")) == {(3, "majority")}


def test_near_duplicates_marked_when_a_run_completes_are_flagged_in_the_queue(make_samples):
    from generation.models import Sample
    from generation.services.samples import samples_mark_duplicates

    run = make_samples(1)
    first_two = list(Sample.objects.filter(run=run, leaf_path__endswith="poems").order_by("pk")[:2])
    Sample.objects.filter(pk=first_two[1].pk).update(question=first_two[0].question)
    assert samples_mark_duplicates(run_id=run.pk, threshold=0.7) >= 1
    assert Queue(duplicate="yes").queryset().filter(pk=first_two[1].pk).exists()


def test_training_reads_the_kept_samples_with_the_edited_text(make_samples, reviewer):
    from review.selectors import approved_samples

    run = make_samples(1)
    a, b, c = ReviewItem.objects.order_by("pk")[:3]
    sample_decide(sample_id=a.pk, reviewer=reviewer, action="approve", expected_version=1)
    sample_decide(sample_id=b.pk, reviewer=reviewer, action="reject", expected_version=1)
    sample_decide(sample_id=c.pk, reviewer=reviewer, action="edit", expected_version=1, question="Q?", response="R.")
    kept = list(approved_samples(run=run.pk))
    assert [item.pk for item in kept] == [a.pk, c.pk]
    assert (kept[0].kept_question, kept[1].kept_question, kept[1].kept_response) == (a.sample.question, "Q?", "R.")


def test_review_sync_opens_items_for_samples_written_before_review(make_samples):
    from django.core.management import call_command

    from generation.models import Sample

    make_samples(1)
    sample = Sample.objects.order_by("pk").first()
    ReviewItem.objects.all().delete()
    from review.models import Counter

    Counter.objects.all().delete()
    call_command("review_sync", stdout=io.StringIO())
    assert ReviewItem.objects.count() == Sample.objects.count() == 15
    assert ReviewItem.objects.get(pk=sample.pk).score == sample.scores["pair"]
    assert_consistent()


@pytest.mark.django_db(transaction=True)
def test_bulk_and_its_undo_run_on_two_connections_and_the_counters_equal_a_recount(make_samples, reviewer, eager):
    make_samples(4)  # 60 samples; the branch's 40 lie on both sides of the cut between the two slices
    queue = Queue(path="compositional_skills/writing")
    count, ceiling = bulk.bulk_preview(queue=queue, selected=[], excluded=[], reviewer=reviewer)
    job = bulk.bulk_create(reviewer=reviewer, action="approve", queue=queue, expected=count, ceiling=ceiling)
    job.refresh_from_db()
    parts = list(job.slices.filter(undo=False).order_by("low").values_list("count", flat=True))
    assert (job.status, job.done, len(parts)) == ("done", 40, 2) and all(parts)
    assert len(set(job_decisions(job, "approve"))) == 40
    assert_consistent()
    bulk.bulk_undo(job=job, reviewer=reviewer)
    job.refresh_from_db()
    assert (job.status, job.undone, job.slices.filter(undo=True).count()) == ("undone", 40, 2)
    # One sweep a chunk records the undo (a chunk per slice here), not a row per sample.
    assert Decision.objects.filter(job=job, action="undo").count() == 2
    assert Decision.objects.filter(job=job, action="undo", item__isnull=False).count() == 0
    assert sorted(taken_back(job)) == sorted(job_decisions(job, "approve"))
    assert ReviewItem.objects.filter(state="pending").count() == 60
    assert_consistent()
