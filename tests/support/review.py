"""Review fixtures the review and browser tests share: a run with samples, a second reviewer, eager Celery."""

import io
from collections import Counter

import pytest

from tests.support.qna import POEMS

LEAVES = ("compositional_skills/writing/poems", "compositional_skills/writing/jokes", "compositional_skills/other/x")


def words(n: int, salt: int) -> str:
    return " ".join(f"w{(salt * 7 + i) % 97}" for i in range(n))


@pytest.fixture
def make_samples(curator):
    """`make_samples(per_item)`: a run over three skills leaves (5 work items each) with `per_item` samples
    per item, written through generation's service (which opens their review items). Returns the run."""
    from curation import services
    from curation.taxonomy.source import write_tar
    from generation.sdg.pipelines import GeneratedSample as SdgSample
    from generation.services.runs import run_create
    from generation.services.samples import samples_write
    from generation.services.teachers import teacher_create

    def make(per_item: int = 2, *, required: int | None = None, rule: str = "unanimous"):
        from curation.models import Leaf
        from generation.models import Teacher

        if not Leaf.objects.exists():
            buffer = io.BytesIO()
            write_tar([(f"{path}/qna.yaml", POEMS) for path in LEAVES], buffer)
            services.taxonomy_import(
                source=services.ImportSource.upload(io.BytesIO(buffer.getvalue()), "t.tar.gz"), user=curator
            )
        teacher = teacher_create(
            user=curator,
            name=f"teacher {Teacher.objects.count()}",
            base_url="http://127.0.0.1:9/v1",
            model="teacher-model",
        )
        from labweb.celery import app

        # The run's work items are never processed (the samples are written below): with eager tasks on, a
        # committed run_create would run them at once against a teacher that is not there.
        eager = app.conf.task_always_eager
        app.conf.task_always_eager = False
        try:
            run = run_create(teacher=teacher, user=curator, samples_per_leaf=5)
        finally:
            app.conf.task_always_eager = eager
        if required:
            from review.models import ReviewPolicy

            ReviewPolicy.objects.create(run=run, required=required, rule=rule)
        n = 0
        for item in run.items.order_by("leaf_path", "seed_index"):
            batch = []
            for _ in range(per_item):
                n += 1
                batch.append(
                    SdgSample(
                        key=f"s{n}",
                        question=f"Question {n}: {words(20, n)}?",
                        response=f"Answer {n}: {words(30, n)}.",
                        context=None,
                        seed_indices=[item.seed_index],
                        chunk_index=None,
                        scores={"question": 1, "pair": 1 + n % 3},
                        rationales={"question": "fine", "pair": f"rated {n}"},
                        raw={},
                        prompts=["skills_questions@1", "pair_judge@1"],
                    )
                )
            samples_write(item=item, samples=batch)
        return run

    return make


@pytest.fixture
def second_reviewer(db):
    from tests.conftest import _user

    return _user("rita", "reviewer")


@pytest.fixture
def eager(settings):
    """Celery tasks run at once in this process (bulk jobs), as CELERY_TASK_ALWAYS_EAGER does."""
    from labweb.celery import app

    before = app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = True
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def assert_consistent():
    """Every item's state and text equal what its decisions say, and the counters equal a recount."""
    from django.db.models import Count, Q

    from review.models import Counter, ReviewItem
    from review.services.decisions import replay_state

    for item in ReviewItem.objects.prefetch_related("decisions__undoes"):
        assert replay_state(item) == (item.state, item.question, item.response), item.pk
    states = ("pending", "approved", "rejected", "edited")
    recount = {
        (row["run_id"], row["leaf_path"]): tuple(row[s] for s in states)
        for row in ReviewItem.objects.order_by()
        .values("run_id", "leaf_path")
        .annotate(**{s: Count("pk", filter=Q(state=s)) for s in states})
    }
    kept = {(c.run_id, c.leaf_path): (c.pending, c.approved, c.rejected, c.edited) for c in Counter.objects.all()}
    assert kept == recount


def taken_back(job) -> Counter:
    """How many times the job's undo took each sample back: its sweeps (one row a chunk) that cover the job's
    decision on a sample whose current decision is a sweep of the job."""
    from review.models import Decision, ReviewItem

    sweeps = list(Decision.objects.filter(job=job, item__isnull=True))
    back = set(ReviewItem.objects.filter(decision__in=sweeps).values_list("pk", flat=True))
    decisions = Decision.objects.filter(job=job, item__isnull=False).exclude(action="undo")
    return Counter(d.item_id for d in decisions for sweep in sweeps if sweep.sweeps(d) and d.item_id in back)
