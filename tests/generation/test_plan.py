"""Planning a run in the pure core: which units each leaf gets and how many samples each makes. No Django."""

from generation.sdg.chunking import chunk_document
from generation.sdg.pipelines import LeafSource, chunk_tokens, plan_run
from tests.support.sdg import HAIKU, MEETINGS, MOONS, MOONS_DOCUMENT, demo_leaf

DOCUMENT = MOONS_DOCUMENT.read_text(encoding="utf-8")


def source(path: str, *, documents: tuple[str, ...] = ()) -> LeafSource:
    return LeafSource(path=path, spec=demo_leaf(path), documents=documents)


def test_a_skills_leaf_gets_one_unit_per_seed_sharing_its_samples_and_none_for_a_seed_left_without():
    plan = plan_run([source(HAIKU)], samples_per_leaf=4, context_tokens=4096)
    assert len(demo_leaf(HAIKU).seeds) == 6
    assert [(unit.name, unit.target) for unit in plan.units] == [
        ("seed 0", 1),
        ("seed 1", 1),
        ("seed 2", 1),
        ("seed 3", 1),
    ]
    assert plan.leaves == 1 and plan.skipped == []
    many = plan_run([source(HAIKU)], samples_per_leaf=20, context_tokens=4096)
    assert [unit.target for unit in many.units] == [4, 4, 3, 3, 3, 3]


def test_a_knowledge_leaf_gets_one_unit_per_chunk_of_its_documents_sized_for_the_teachers_context():
    plan = plan_run([source(MOONS, documents=(DOCUMENT,))], samples_per_leaf=6, context_tokens=1024)
    chunks = chunk_document(DOCUMENT, max_tokens=chunk_tokens(1024))
    assert len(chunks) > 1
    assert [unit.chunk for unit in plan.units] == chunks[: len(plan.units)]
    assert [unit.name for unit in plan.units] == [f"chunk {index}" for index in range(len(plan.units))]
    assert sum(unit.target for unit in plan.units) == 6
    assert all(unit.seed_index is None and unit.leaf.path == MOONS for unit in plan.units)


def test_leaves_that_cannot_be_generated_from_are_skipped_with_the_reason_and_the_rest_is_planned():
    invalid = LeafSource(path="compositional_skills/broken", spec=None, problem="seed_examples: too few")
    unnamed = LeafSource(path="compositional_skills/unnamed", spec=None)
    plan = plan_run([invalid, unnamed, source(MOONS), source(HAIKU)], samples_per_leaf=3, context_tokens=4096)
    assert {unit.leaf.path for unit in plan.units} == {HAIKU}
    assert plan.leaves == 1
    assert {skipped.path: skipped.reason for skipped in plan.skipped} == {
        invalid.path: "the leaf is invalid (seed_examples: too few)",
        unnamed.path: "the leaf is invalid (it does not validate)",
        MOONS: "a knowledge leaf needs a source document to generate from; attach one",
    }


def test_a_leaf_with_fewer_seeds_than_the_run_needs_is_skipped():
    seeds = len(demo_leaf(MEETINGS).seeds)
    plan = plan_run([source(MEETINGS), source(HAIKU)], samples_per_leaf=3, context_tokens=4096, min_seeds=seeds + 1)
    assert {unit.leaf.path for unit in plan.units} == {HAIKU}
    assert [(s.path, s.reason) for s in plan.skipped] == [
        (MEETINGS, f"the leaf has {seeds} seed examples; generation needs {seeds + 1}")
    ]


def test_nothing_in_scope_plans_nothing():
    assert plan_run([], samples_per_leaf=30, context_tokens=4096).units == []
