"""Review's own tables: the current state of each sample, the append-only decisions, votes, counters, bulk jobs.

`ReviewItem` is one row per generation `Sample` (same primary key) carrying the state, a version for optimistic
locking, the edited text and copies of the queue's filter and sort keys, so a queue page is an index range scan.
Its state always equals what the sample's `Decision` rows say (`review.services.decisions.replay_state`).
"""

from django.conf import settings
from django.db import models

from generation.models import GenerationRun, Sample
from labweb import jobs
from review.core import rules

REASONS = (
    ("incorrect", "Incorrect answer"),
    ("off_topic", "Off topic for the leaf"),
    ("unclear", "Unclear question"),
    ("unsafe", "Unsafe or harmful"),
    ("duplicate", "Repeats another sample"),
    ("formatting", "Broken formatting"),
    ("other", "Other (say why)"),
)


VERDICTS = [(rules.APPROVE, "approve"), (rules.REJECT, "reject")]


class State(models.TextChoices):
    PENDING = rules.PENDING
    APPROVED = rules.APPROVED
    REJECTED = rules.REJECTED
    EDITED = rules.EDITED


class Rule(models.TextChoices):
    UNANIMOUS = rules.UNANIMOUS
    MAJORITY = rules.MAJORITY


class ReviewPolicy(models.Model):
    """How many reviewers a run's samples need, and how their votes combine (Argilla's `min_submitted`)."""

    run = models.OneToOneField(GenerationRun, on_delete=models.CASCADE, related_name="review_policy")
    required = models.PositiveSmallIntegerField(default=1)
    rule = models.CharField(max_length=16, choices=Rule.choices, default=Rule.UNANIMOUS)

    def __str__(self) -> str:
        return f"{self.run}: {self.required} reviewer(s), {self.rule}"


class ReviewItem(models.Model):
    sample = models.OneToOneField(Sample, primary_key=True, on_delete=models.CASCADE, related_name="review")
    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="+", db_index=False)
    leaf_id = models.BigIntegerField(null=True, blank=True)  # the curation leaf, kept when the leaf is deleted
    leaf_path = models.CharField(max_length=1000)
    kind = models.CharField(max_length=16)
    teacher_model = models.CharField(max_length=500)
    score = models.FloatField(default=0, help_text="The final judge's score (skills: pair 1-3, knowledge: relevance)")
    is_duplicate = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    version = models.PositiveIntegerField(default=1)
    required = models.PositiveSmallIntegerField(default=1)
    rule = models.CharField(max_length=16, choices=Rule.choices, default=Rule.UNANIMOUS)
    votes = models.PositiveSmallIntegerField(default=0)
    question = models.TextField(null=True, blank=True)  # noqa: DJ001 - null: not edited, the sample's text holds
    response = models.TextField(null=True, blank=True)  # noqa: DJ001
    decision = models.ForeignKey(
        "Decision",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=False,  # see Decision: only the services write it, from a row they just inserted
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Each index is a keyset order of the queue. Those for a run, a score and a leaf hold pending rows only:
        # a decision writes fewer index entries (a bulk approve of 100,000 touches two indexes, not five).
        indexes = [
            models.Index(fields=["state", "sample"], name="review_item_state_id"),
            models.Index(fields=["run", "sample"], name="review_item_pending_run", condition=models.Q(state="pending")),
            models.Index(
                fields=["score", "sample"], name="review_item_pending_score", condition=models.Q(state="pending")
            ),
            models.Index(
                fields=["leaf_path", "sample"], name="review_item_pending_leaf", condition=models.Q(state="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"Sample {self.sample_id} ({self.state})"

    @property
    def edited(self) -> bool:
        return self.question is not None or self.response is not None

    @property
    def kept_question(self) -> str:
        """The question in force: the reviewer's edit, or the sample's own."""
        return self.question if self.question is not None else self.sample.question

    @property
    def kept_response(self) -> str:
        return self.response if self.response is not None else self.sample.response


class BulkJob(jobs.Leased, jobs.Sent):
    """One bulk decision over a selection or "all matching, minus these", run in chunks by a Celery task.

    The worker that runs it (or its undo) holds it under a lease (labweb.jobs) that its process renews; the
    reaper sends a job whose lease lapsed again, and it resumes from its slices' cursors, and sends again one whose
    message no worker took. Whatever stops it leaves it failed, with the error, until someone resumes it; a
    cancelled one keeps what it decided (undoable as a done one is) and decides nothing more.
    """

    class Status(models.TextChoices):
        QUEUED = jobs.Status.QUEUED
        RUNNING = jobs.Status.RUNNING
        DONE = "done"
        FAILED = jobs.Status.FAILED
        CANCELLED = jobs.Status.CANCELLED
        UNDOING = "undoing"
        UNDONE = "undone"

    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=16, choices=VERDICTS)
    reason = models.CharField(max_length=32, blank=True)
    note = models.TextField(blank=True)
    filters = models.JSONField(default=dict, help_text="The queue filter, as the list takes it")
    selected = models.JSONField(default=list, help_text="Sample ids, when the job acts on a selection")
    excluded = models.JSONField(default=list, help_text="Sample ids left out of all that match")
    ceiling = models.BigIntegerField(help_text="The newest sample id when confirmed: later samples are not included")
    expected = models.PositiveIntegerField(help_text="How many the confirmation showed")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    undone = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    # The ids of the job's decisions (not of its undo) lie in this range: its undo finds them by primary key.
    first_decision = models.BigIntegerField(null=True, blank=True)
    last_decision = models.BigIntegerField(null=True, blank=True)

    # The statuses a worker has something to do in (the reaper looks at these).
    WORKING = (Status.QUEUED, Status.RUNNING, Status.UNDOING)
    # What Cancel stops: deciding. An undo runs to its end (what it takes back is what the job decided).
    CANCELLABLE = (Status.QUEUED, Status.RUNNING)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Bulk {self.action} #{self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status in self.WORKING

    @property
    def percent(self) -> int:
        if self.status in (self.Status.UNDOING, self.Status.UNDONE):
            return 100 if self.status == self.Status.UNDONE else min(99, int(100 * self.undone / max(self.done, 1)))
        if self.status == self.Status.DONE:
            return 100
        return min(99, int(100 * self.done / max(self.expected, 1)))


class BulkEvent(jobs.Event):
    """A line of a bulk job's log: created, taken over from a dead worker or sent again, failed (with the error),
    resumed, cancelled, done."""

    job = models.ForeignKey(BulkJob, on_delete=models.CASCADE, related_name="events")


class BulkSlice(models.Model):
    """A share of a bulk job (or of its undo) that one worker takes at a time: the samples with ids in
    (low, high], worked in chunks. `cursor` is where the next chunk starts after, a sample id for the job and
    a decision id for its undo (which reads the job's decisions by id), moved in the chunk's own transaction,
    so a worker that dies resumes where the slice stood."""

    job = models.ForeignKey(BulkJob, on_delete=models.CASCADE, related_name="slices")
    undo = models.BooleanField(default=False)
    low = models.BigIntegerField()
    high = models.BigIntegerField()
    cursor = models.BigIntegerField()
    count = models.PositiveIntegerField(default=0, help_text="Decisions this slice made")
    finished = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "undo", "low"], name="review_bulkslice_once")]

    def __str__(self) -> str:
        return f"{'Undo of ' if self.undo else ''}{self.job}: ({self.low}, {self.high}]"


class Decision(models.Model):
    """One decision, never changed or deleted: who did what to which sample, the text before and after, when.

    `question_before/after` and `response_before/after` are set when the decision changes the text (an edit,
    or the undo of one); null means the text stayed as it was. An undo names the decision it takes back.

    The undo of a bulk job is recorded a chunk at a time, one row for up to a chunk of samples (a sweep): it
    names no item and no single decision, but the job and two ranges, and takes back each of the job's
    decisions with an id in (undoes_after, undoes_through] on a sample with an id in (samples_after,
    samples_through] that is still in force when the sweep is made; each such sample's `decision` is then the
    sweep. `replay_state` reads a sample's sweeps beside its own rows.
    """

    class Action(models.TextChoices):
        APPROVE = rules.APPROVE
        REJECT = rules.REJECT
        EDIT = rules.EDIT, "edit and approve"
        UNDO = rules.UNDO

    # No database constraints on these keys: a bulk job inserts 100,000 decisions in one statement, and the
    # deferred checks (a locking lookup of the item, the reviewer and the job for every row, all on the same
    # two rows for the last two) cost more than the insert. The services write them from rows they hold
    # locked; Django's on_delete still applies (CASCADE with the item, PROTECT for reviewer and job).
    item = models.ForeignKey(
        ReviewItem, null=True, blank=True, on_delete=models.CASCADE, related_name="decisions", db_constraint=False
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    reason = models.CharField(max_length=32, blank=True)
    note = models.TextField(blank=True)
    question_before = models.TextField(null=True, blank=True)  # noqa: DJ001
    question_after = models.TextField(null=True, blank=True)  # noqa: DJ001
    response_before = models.TextField(null=True, blank=True)  # noqa: DJ001
    response_after = models.TextField(null=True, blank=True)  # noqa: DJ001
    undoes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    job = models.ForeignKey(
        BulkJob,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="decisions",
        db_constraint=False,
        db_index=False,  # the job's decisions are found by id (BulkJob.first_decision, last_decision)
    )
    state_after = models.CharField(max_length=16, choices=State.choices)
    created_at = models.DateTimeField()
    # A sweep's ranges (see above); null on every other decision.
    undoes_after = models.BigIntegerField(null=True, blank=True)
    undoes_through = models.BigIntegerField(null=True, blank=True)
    samples_after = models.BigIntegerField(null=True, blank=True)
    samples_through = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        # A bulk job's decisions write two index entries each, the primary key and the item's (its undo writes
        # a sweep a chunk): its undo finds them by id range, and a reviewer's own last decisions (what undo from
        # the keyboard takes back) are one index; their bulk jobs are found through BulkJob.
        indexes = [
            models.Index(fields=["reviewer", "id"], name="review_decision_own", condition=models.Q(job__isnull=True)),
            models.Index(
                fields=["undoes"],
                name="review_decision_undoes",
                condition=models.Q(undoes__isnull=False, job__isnull=True),
            ),
            # A job's sweeps, a few rows per job (no other row has an entry).
            models.Index(fields=["job", "samples_after"], name="review_decision_sweeps", condition=models.Q(item=None)),
        ]

    def __str__(self) -> str:
        if self.is_sweep:
            return f"undo of bulk job {self.job_id} on samples ({self.samples_after}, {self.samples_through}]"
        return f"{self.action} on sample {self.item_id} by {self.reviewer_id}"

    @property
    def is_sweep(self) -> bool:
        return self.item_id is None

    def sweeps(self, decision: "Decision") -> bool:
        """Whether this sweep covers `decision` (it takes it back if that decision is still in force)."""
        return (
            self.is_sweep
            and decision.job_id == self.job_id
            and decision.action != self.Action.UNDO
            and self.undoes_after < decision.pk <= self.undoes_through
            and self.samples_after < decision.item_id <= self.samples_through
        )


class Vote(models.Model):
    """A reviewer's standing vote on a sample that needs more than one reviewer (its decision not undone)."""

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="vote_rows")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decision = models.ForeignKey(Decision, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=16, choices=Decision.Action.choices[:3])

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "reviewer"], name="review_vote_once")]

    def __str__(self) -> str:
        return f"{self.reviewer_id}: {self.action} on {self.item_id}"


class Counter(models.Model):
    """Review progress of one leaf in one run, kept in step with every decision (never counted at read time)."""

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="+")
    leaf_path = models.CharField(max_length=1000)
    leaf_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    pending = models.IntegerField(default=0)
    approved = models.IntegerField(default=0)
    rejected = models.IntegerField(default=0)
    edited = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "leaf_path"], name="review_counter_run_leaf")]

    def __str__(self) -> str:
        return f"{self.leaf_path} in run {self.run_id}"
