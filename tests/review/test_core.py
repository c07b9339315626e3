"""The pure core of review: the state rule for k reviewers, agreement against hand-computed values, word diff."""

import pytest

from review.core.agreement import cohen_kappa, krippendorff_alpha
from review.core.diff import ADDED, REMOVED, SAME, word_diff
from review.core.rules import state_for


@pytest.mark.parametrize(
    ("votes", "required", "rule", "state"),
    [
        ([], 1, "unanimous", "pending"),
        (["approve"], 1, "unanimous", "approved"),
        (["reject"], 1, "unanimous", "rejected"),
        (["edit"], 1, "unanimous", "edited"),
        (["approve"], 2, "unanimous", "pending"),
        (["approve", "approve"], 2, "unanimous", "approved"),
        (["approve", "reject"], 2, "unanimous", "rejected"),
        (["approve", "edit"], 2, "unanimous", "edited"),
        (["approve", "reject"], 2, "majority", "rejected"),  # a tie does not keep a sample
        (["approve", "approve", "reject"], 3, "majority", "approved"),
        (["approve", "reject", "reject"], 3, "majority", "rejected"),
        (["edit", "approve", "reject"], 3, "majority", "edited"),
        (["approve", "approve", "reject"], 3, "unanimous", "rejected"),
    ],
)
def test_state_follows_the_rule_for_k_reviewers(votes, required, rule, state):
    assert state_for(votes, required=required, rule=rule) == state


def test_state_rule_refuses_unknown_votes_and_rules():
    with pytest.raises(ValueError):
        state_for(["maybe"], required=1, rule="unanimous")
    with pytest.raises(ValueError):
        state_for(["approve"], required=1, rule="plurality")


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15: po = 0.7, pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_is_one_for_full_agreement_and_undefined_without_variation():
    assert cohen_kappa([("a", "a"), ("r", "r")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None
    assert cohen_kappa([]) is None


def test_krippendorff_alpha_for_two_raters_by_hand():
    # Coincidences: (a,a) 2, (a,r) 1, (r,a) 1, (r,r) 2; n = 6; Do = 2/6, De = 18/30: alpha = 1 - (1/3)/(3/5) = 4/9.
    assert krippendorff_alpha([["a", "a"], ["a", "r"], ["r", "r"]]) == pytest.approx(4 / 9)


def test_krippendorff_alpha_for_three_raters_with_a_missing_value_by_hand():
    # Units a,a,a | a,a,r | r,r,r | a,r (one rater missing). n_a = 6, n_r = 5, n = 11; observed off-diagonal
    # coincidences 4, expected 2 * 6 * 5 / 10 = 6: alpha = 1 - 4/6 = 1/3.
    units = [{"x": "a", "y": "a", "z": "a"}, {"x": "a", "y": "a", "z": "r"}, ["r", "r", "r"], ["a", "r"], ["a"]]
    assert krippendorff_alpha(units) == pytest.approx(1 / 3)


def test_krippendorff_alpha_is_undefined_without_pairs_or_variation():
    assert krippendorff_alpha([["a"], ["r"]]) is None
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None


def test_word_diff_marks_changed_words_and_rebuilds_both_sides():
    before = "The moon orbits the earth every month."
    after = "The moon circles the earth about every 27 days."
    runs = word_diff(before, after)
    assert "".join(text for op, text in runs if op != ADDED) == before
    assert "".join(text for op, text in runs if op != REMOVED) == after
    assert (REMOVED, "orbits ") in runs and (ADDED, "circles ") in runs
    assert runs[0] == (SAME, "The moon ")


def test_word_diff_of_equal_texts_is_one_unchanged_run():
    assert word_diff("a b  c", "a b  c") == [(SAME, "a b  c")]
