"""The evaluation core: the judge's `[[rating]]`, the per-leaf verdict and its thresholds, the multiple-choice
questions a knowledge leaf gives, and the pool that keeps a judge busy."""

import asyncio

import pytest

from evaluation.core.choices import document_questions, seed_questions, sentences
from evaluation.core.compare import Side, Thresholds, compare, tally
from evaluation.core.judge import judge_messages, parse_judgement
from evaluation.core.judging import JudgePool
from generation.sdg.teachers import Completion, TeacherError


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("Good.\nRating: [[7]]", 7.0),
        ("Quoting the form [[5]] first; mine: [[8.5]]", 8.5),
        ("Rating: 6", 6.0),
        ("Rating: **9/10**", 9.0),
        ("No rating at all.", None),
        ("Rating: [[0]]", None),
        ("Rating: [[11]]", None),
        ("", None),
    ],
)
def test_the_judges_rating_is_read_from_its_brackets_and_anything_else_is_unparseable(text, rating):
    judgement = parse_judgement(text)
    assert judgement.rating == rating
    assert judgement.rationale == (text.split("\n")[0] if rating == 7.0 else judgement.rationale)


def test_the_judge_is_shown_the_question_the_reference_and_the_answer():
    messages = judge_messages(question="Q?", reference="R.", answer="A.")
    assert [m["role"] for m in messages] == ["system", "user"]
    body = messages[1]["content"]
    assert body.index("Q?") < body.index("R.") < body.index("A.") and "[[5]]" in body


def side(ratings=(), correct=0, choices=0, loss=None) -> Side:
    return Side(ratings=list(ratings), correct=correct, choices=choices, loss=loss)


def test_a_leaf_improves_regresses_or_stays_by_the_stated_thresholds():
    t = Thresholds(judge=0.5, choice=0.05, loss=0.05)
    assert compare(side([5, 5]), side([6, 6]), t).verdict == "improved"
    assert compare(side([5, 5]), side([5.4, 5.4]), t).verdict == "unchanged"  # within the threshold
    assert compare(side([5]), side([4]), t).verdict == "regressed"
    # A rise in rating with a fall in accuracy beyond its threshold is a regression: forgetting must show.
    assert compare(side([5], 8, 10), side([7], 6, 10), t).verdict == "regressed"
    # Held-out loss decides only where nothing judged or chose; lower is better.
    assert compare(side(loss=2.0), side(loss=1.5), t).verdict == "improved"
    assert compare(side([5], loss=1.0), side([6], loss=3.0), t).verdict == "improved"
    assert compare(side(), side([6]), t).verdict == "unmeasured"
    assert compare(side([5]), side([6]), t).deltas == {"judge": 1.0, "choice": None, "loss": None}
    assert tally(["improved", "improved", "regressed"]) == {
        "improved": 2,
        "unchanged": 0,
        "regressed": 1,
        "unmeasured": 0,
    }


def test_multiple_choice_questions_come_from_the_seeds_and_documents_the_same_every_time():
    seeds = [("ctx", [("q1", "a1"), ("q2", "a2"), ("q3", "a3")])]
    made = seed_questions("knowledge/x", seeds, ["other"])
    assert [q.key for q in made] == ["seed-0-0", "seed-0-1", "seed-0-2"]
    for question in made:
        assert len(question.choices) == 3 and question.question.startswith("ctx")
        assert (
            question.choices[question.correct] == {"seed-0-0": "a1", "seed-0-1": "a2", "seed-0-2": "a3"}[question.key]
        )
    assert made == seed_questions("knowledge/x", seeds, ["other"])
    alone = seed_questions("knowledge/x", [(None, [("q", "a")])], ["b", "c"])
    assert set(alone[0].choices) == {"a", "b", "c"}  # other leaves' answers when the leaf has no others
    text = (
        "# Title\n\nThe first sentence has more than eight words in it. "
        "The second sentence also has many words in it here."
    )
    assert len(sentences(text)) == 2
    docs = document_questions("knowledge/x", [("a.md", text)])
    assert len(docs) == 2 and all(q.choices[q.correct] in text for q in docs)
    assert document_questions("knowledge/x", [("a.md", "Too short.")]) == []


class SlowJudge:
    """A judge that takes `latency` a call and fails the calls it is told to."""

    max_concurrency = 3

    def __init__(self, fail=()):
        self.fail, self.in_flight, self.most = set(fail), 0, 0

    async def complete(self, messages, sampling, stats=None, shape=None):
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if messages[0]["content"] in self.fail:
            raise TeacherError("down")
        return Completion(text="Rating: [[5]]")


def test_the_pool_keeps_its_window_full_and_reports_failures_apart():
    judge = SlowJudge(fail={"3"})

    async def run():
        pool = JudgePool(judge, window=4)
        for n in range(10):
            await pool.submit(n, [{"role": "user", "content": str(n)}])
            assert pool.in_flight <= 4
        await pool.drain()
        return pool

    pool = asyncio.run(run())
    done = pool.take()
    assert sorted(d.key for d in done) == list(range(10)) and judge.most == 4
    assert [d.key for d in done if d.text is None] == [3] and pool.failures == 1
    assert pool.failures_in_row == 0 and pool.last_error == "down"  # successes came after the failure
