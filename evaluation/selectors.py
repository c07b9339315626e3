"""Reads of the evaluation app."""

import json

from django.db.models import QuerySet

from curation.models import Leaf
from evaluation.models import EvaluationJob
from evaluation.services.results import export_rows, leaf_rows
from labweb.errors import LabError
from training.selectors import int_param


def job_list() -> QuerySet[EvaluationJob]:
    return EvaluationJob.objects.select_related("created_by", "checkpoint__phase__job", "judge")


def job_param(params, name: str) -> EvaluationJob | None:
    """The evaluation a query parameter names by id; None when it is absent."""
    pk = int_param(params, name, default=0)
    if not pk:
        return None
    found = job_list().filter(pk=pk).first()
    if found is None:
        raise LabError(f"{name} names no evaluation: {pk}.", field=name)
    return found


def text_param(params, name: str) -> str:
    value = params.get(name) or ""
    if "\x00" in value or len(value) > 1000:
        raise LabError(f"{name} is not a leaf path or a kind this API knows.", field=name)
    return value


def job_document(job: EvaluationJob) -> dict:
    return {
        "id": job.pk,
        "name": str(job),
        "status": job.status,
        "model": job.model,
        "base_model": job.base_model,
        "checkpoint": job.checkpoint_id,
        "judge": job.judge_config.get("name"),
        "thresholds": job.thresholds,
        "sets": job.sets,
    }


def export_json(job: EvaluationJob):
    """{"job", "leaves", "measurements"}, streamed a measurement at a time."""
    head = {"job": job_document(job), "leaves": leaf_rows(job)}
    yield json.dumps(head)[:-1] + ', "measurements": ['
    for index, row in enumerate(export_rows(job)):
        yield ("," if index else "") + json.dumps(row)
    yield "]}"


def playground_leaves() -> list[str]:
    """The leaves whose seed questions the playground offers as prompts: those that have seeds."""
    return list(Leaf.objects.filter(seeds__isnull=False).distinct().order_by("path").values_list("path", flat=True))
