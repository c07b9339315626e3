"""What an evaluation asks, per leaf: the seed questions and the held-out samples (judged), and for knowledge
leaves the multiple-choice questions of its seeds and documents; the held-out samples' loss."""

import json
from collections import defaultdict
from pathlib import Path

from curation.models import Leaf
from evaluation.core.choices import document_questions, seed_questions
from evaluation.models import EvaluationJob, LeafResult, Measurement, Role
from evaluation.services.jobs import phase_datasets
from labweb.errors import LabError
from training.models import Dataset
from training.services.datasets import held_out_path

MAX_DISTRACTOR_POOL = 200


def seed_pairs(leaf: Leaf) -> list[tuple[str | None, list[tuple[str, str]]]]:
    """[(context, [(question, answer)])] for every seed of the leaf, skills and knowledge alike."""
    out = []
    for seed in leaf.seeds.all():
        if seed.questions_and_answers:
            pairs = [
                (qa.get("question") or "", qa.get("answer") or "")
                for qa in seed.questions_and_answers
                if isinstance(qa, dict) and qa.get("question")
            ]
        else:
            pairs = [(seed.question, seed.answer or "")] if seed.question else []
        if pairs:
            out.append((seed.context, pairs))
    return out


def job_datasets(job: EvaluationJob) -> list[Dataset]:
    """The dataset builds whose held-out samples the job asks: its own, and those of every phase of its training
    job up to the one it evaluates, so that after a later phase the earlier phases' held-out samples are asked
    again (what the replay buffer kept, or what was forgotten, shows there too)."""
    found = [job.dataset] if job.dataset else []
    if job.phase_id:
        for phase in job.phase.job.phases.filter(order__lte=job.phase.order).order_by("order"):
            found += [f.dataset for f in phase_datasets(phase)]
    return list({dataset.pk: dataset for dataset in found}.values())


def held_out_records(datasets: list[Dataset]) -> dict[str, list[dict]]:
    """leaf path -> the held-out records the dataset builds kept out of training (a record in two builds once)."""
    found: dict[str, list[dict]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for dataset in datasets:
        path = held_out_path(dataset)
        if path is None or not Path(path).is_file():
            continue
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                    leaf = record["metadata"]["leaf"]
                    same = (leaf, json.dumps(record["messages"], sort_keys=True))
                except (ValueError, KeyError, TypeError):
                    raise LabError("A held-out record is not a dataset record.", path=str(path), line=number) from None
                if same not in seen:
                    seen.add(same)
                    found[leaf].append(record)
    return found


def _turns(record: dict) -> tuple[str, str]:
    messages = record["messages"]
    question = next((m["content"] for m in messages if m.get("role") == "user"), "")
    answer = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), "")
    return question, answer


def plan_job(job: EvaluationJob) -> int:
    """Write every measurement the job makes (once: a second call adds nothing); returns how many there are."""
    leaves = list(Leaf.objects.filter(path__in=job.leaves).prefetch_related("seeds", "documents").order_by("path"))
    roles = [Role.CHECKPOINT] + ([Role.BASE] if job.base_model else [])
    held = held_out_records(job_datasets(job))
    local = job.backend == EvaluationJob.Backend.LOCAL
    pool = []
    if local:
        for leaf in leaves:
            if leaf.kind == "knowledge":
                pool += [a for _, pairs in seed_pairs(leaf) for _, a in pairs]
    rows = []
    results = []
    for leaf in leaves:
        sets = sorted(name for name, paths in job.sets.items() if leaf.path in paths)
        results.append(LeafResult(job=job, leaf=leaf, leaf_path=leaf.path, sets=sets))
        judged = []
        seeds = seed_pairs(leaf)
        for s, (context, pairs) in enumerate(seeds):
            for p, (question, answer) in enumerate(pairs):
                text = f"{context.strip()}\n\n{question.strip()}" if context else question.strip()
                judged.append((f"seed-{s}-{p}", text, answer))
        for record in held.get(leaf.path, []):
            question, answer = _turns(record)
            judged.append((f"held-{record['metadata'].get('sample', len(judged))}", question, answer))
        choices = []
        if local and leaf.kind == "knowledge":
            others = [a for a in pool if a not in {x for _, ps in seeds for _, x in ps}][:MAX_DISTRACTOR_POOL]
            choices = seed_questions(leaf.path, seeds, others)
            choices += document_questions(leaf.path, [(d.name, d.content) for d in leaf.documents.all()])
        for role in roles:
            rows += [
                Measurement(
                    job=job, role=role, kind=Measurement.Kind.JUDGED, leaf_path=leaf.path, key=key,
                    question=question, reference=reference,
                )
                for key, question, reference in judged
            ]  # fmt: skip
            rows += [
                Measurement(
                    job=job, role=role, kind=Measurement.Kind.CHOICE, leaf_path=leaf.path, key=c.key,
                    question=c.question, choices=list(c.choices), correct=c.correct,
                )
                for c in choices
            ]  # fmt: skip
    Measurement.objects.bulk_create(rows, ignore_conflicts=True, batch_size=2000)
    LeafResult.objects.bulk_create(results, ignore_conflicts=True, batch_size=2000)
    return Measurement.objects.filter(job=job).count()


def held_out_by_leaf(job: EvaluationJob) -> dict[str, list[tuple[list[dict], bool]]]:
    return {
        leaf: [(r["messages"], bool(r.get("unmask"))) for r in records]
        for leaf, records in held_out_records(job_datasets(job)).items()
        if leaf in set(job.leaves)
    }
