"""Samples: written exactly once by the work item that made them, and marked when they repeat each other."""

from itertools import groupby
from operator import attrgetter

from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce

from generation.models import Sample, WorkItem
from generation.sdg.dedup import earlier_repeats
from generation.sdg.pipelines import GeneratedSample
from generation.signals import duplicates_marked, samples_written


def samples_kept() -> Coalesce:
    """A work item's samples, every attempt's, counted inside the UPDATE of the item that records them."""
    count = Sample.objects.filter(item_id=OuterRef("pk")).order_by().values("item_id").annotate(n=Count("pk"))
    return Coalesce(Subquery(count.values("n")[:1]), 0)


def samples_write(*, item: WorkItem, samples: list[GeneratedSample]) -> int:
    """Insert samples by idempotency key; a sample already written (by an earlier attempt) is left alone."""
    rows = [
        Sample(
            idempotency_key=f"{item.run_id}:{item.pk}:{sample.key}",
            run_id=item.run_id,
            item=item,
            leaf_id=item.leaf_id,
            leaf_path=item.leaf_path,
            kind=item.kind,
            question=sample.question,
            response=sample.response,
            context=sample.context,
            seed_indices=sample.seed_indices,
            chunk_index=sample.chunk_index,
            scores=sample.scores,
            rationales=sample.rationales,
            raw=sample.raw,
            prompts=sample.prompts,
            steered_verdicts=sample.steered_verdicts,
            teacher_id=item.run.teacher_id,
            teacher_model=item.run.teacher_config["model"],
        )
        for sample in samples
    ]
    with transaction.atomic():
        created = Sample.objects.bulk_create(rows, ignore_conflicts=True)
        samples_written.send(sender=Sample, item=item)
    return len(created)


def samples_mark_duplicates(*, run_id: int, threshold: float) -> int:
    """Flag samples whose question nearly repeats one of another work item of the same leaf.

    Each unit already drops near-duplicates of the seeds and of its own candidates; units run in parallel, so
    this pass across them runs once, when the run completes, in key order: the result does not depend on which
    worker finished first.
    """
    samples = (
        Sample.objects.filter(run_id=run_id, duplicate_of__isnull=True)
        .order_by("leaf_path", "idempotency_key")
        .only("pk", "leaf_path", "question")
    )
    marked = []
    for _, group in groupby(samples.iterator(chunk_size=2000), key=attrgetter("leaf_path")):
        group = list(group)
        for sample, earlier in zip(group, earlier_repeats((s.question for s in group), threshold), strict=True):
            if earlier is not None:
                sample.duplicate_of_id = group[earlier].pk
                marked.append(sample)
    with transaction.atomic():
        Sample.objects.bulk_update(marked, ["duplicate_of"], batch_size=1000)
        if marked:
            duplicates_marked.send(sender=Sample, run_id=run_id)
    return len(marked)
