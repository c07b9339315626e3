"""Teachers: an OpenAI-compatible server or a local transformers model, behind one async interface.

Every call goes through `CachedTeacher`, which keys the response by (model, messages, sampling, seed), so a
resumed run replays what it already paid for instead of asking again.
"""

from generation.sdg.teachers.answer_format import Probe, probe_answer_format
from generation.sdg.teachers.base import (
    FAILURE_CAUSES,
    CallStats,
    Completion,
    Sampling,
    Shape,
    TeacherClient,
    TeacherError,
    call_depth,
)
from generation.sdg.teachers.cache import CachedTeacher, cache_key
from generation.sdg.teachers.limits import (
    Budget,
    ConcurrencyLimit,
    EndpointState,
    ProcessBudget,
    Slot,
    call_share,
    process_budget,
    shared_limit,
)
from generation.sdg.teachers.local import LocalTeacher
from generation.sdg.teachers.probe import probe
from generation.sdg.teachers.retry import RetryPolicy
from generation.sdg.teachers.server import ANSWER_FORMATS, OpenAITeacher

__all__ = [
    "ANSWER_FORMATS",
    "FAILURE_CAUSES",
    "Budget",
    "CachedTeacher",
    "CallStats",
    "Completion",
    "ConcurrencyLimit",
    "EndpointState",
    "LocalTeacher",
    "OpenAITeacher",
    "Probe",
    "ProcessBudget",
    "RetryPolicy",
    "Sampling",
    "Shape",
    "Slot",
    "TeacherClient",
    "TeacherError",
    "cache_key",
    "probe_answer_format",
    "call_depth",
    "call_share",
    "process_budget",
    "probe",
    "shared_limit",
]
