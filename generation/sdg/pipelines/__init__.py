"""The LAB pipelines ("full" skills and knowledge), one unit of work at a time.

A unit is one seed example of a skills leaf or one chunk of a knowledge leaf (`spec.py`); `plan.py` shares a
run's samples out over its units; `unit.py` runs a unit in rounds, and `skills.py` and `knowledge.py` say
what a round asks the teacher; `shapes.py` holds the forms the answers take.
"""

from generation.sdg.pipelines.knowledge import KnowledgeUnitRunner
from generation.sdg.pipelines.plan import LeafSource, RunPlan, SkippedLeaf, chunk_tokens, plan_run, split_target
from generation.sdg.pipelines.shapes import (
    CONTEXTS,
    FAITHFUL,
    QUESTION_ANSWERS,
    QUESTION_OK,
    QUESTIONS,
    RELEVANCE,
    RESPONSE_RATING,
)
from generation.sdg.pipelines.skills import SkillsUnitRunner
from generation.sdg.pipelines.spec import KNOWLEDGE, SKILLS, GeneratedSample, LeafSpec, PipelineConfig, Unit
from generation.sdg.pipelines.unit import Candidate, Emit, UnitResult, UnitRunner, ask_count, calls_if_accepted
from generation.sdg.teachers import CachedTeacher


def unit_runner(unit: Unit, teacher: CachedTeacher, config: PipelineConfig, emit: Emit) -> UnitRunner:
    """The runner of the unit's pipeline; `await runner.run()` makes its samples and hands them to `emit`."""
    runner = KnowledgeUnitRunner if unit.leaf.kind == KNOWLEDGE else SkillsUnitRunner
    return runner(unit, teacher, config, emit)


__all__ = [
    "CONTEXTS",
    "FAITHFUL",
    "KNOWLEDGE",
    "QUESTIONS",
    "QUESTION_ANSWERS",
    "QUESTION_OK",
    "RELEVANCE",
    "RESPONSE_RATING",
    "SKILLS",
    "Candidate",
    "Emit",
    "GeneratedSample",
    "KnowledgeUnitRunner",
    "LeafSource",
    "LeafSpec",
    "PipelineConfig",
    "RunPlan",
    "SkillsUnitRunner",
    "SkippedLeaf",
    "Unit",
    "UnitResult",
    "UnitRunner",
    "ask_count",
    "calls_if_accepted",
    "chunk_tokens",
    "plan_run",
    "split_target",
    "unit_runner",
]
