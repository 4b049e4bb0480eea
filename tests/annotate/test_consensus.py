from __future__ import annotations

import random
import statistics

import pytest
from scipy.stats import kendalltau

from rankrm.annotate.consensus import (
    borda,
    kendall_tau_b,
    kendall_w,
    order_of,
    pair_agreement,
    ranked_pairs,
    ranks_of,
    validate_order,
)
from rankrm.annotate.stats import annotator_agreement


def test_orders_and_ranks_convert_both_ways_with_ties() -> None:
    order = [[2], [0, 3], [1]]
    assert ranks_of(order, 4) == [2, 3, 1, 2]
    assert order_of([2, 3, 1, 2]) == [[2], [0, 3], [1]]
    assert order_of([0.5, 2.0, 0.5], higher_is_better=True) == [[1], [0, 2]]


@pytest.mark.parametrize(
    ("order", "problem"),
    [
        ([[0], [1], [2]], "order[2][0]: 2 is not a response index (0 to 1)"),
        ([[0, 1], [1]], "order[1][0]: response 1 is already placed at order[0][1]"),
        ([[0]], "leaves out response(s) [1]"),
        ([[0], []], "order[1] must be a non-empty list"),
        ([[0], [True]], "order[1][0]: True is not a response index"),
        ("01", "must be a non-empty list of groups"),
    ],
)
def test_an_order_that_is_not_a_ranking_of_the_responses_is_refused(
    order: object, problem: str
) -> None:
    with pytest.raises(ValueError) as caught:
        validate_order(order, 2)
    assert problem in str(caught.value)


def test_tau_b_matches_scipy_with_ties() -> None:
    rng = random.Random(0)
    for _ in range(50):
        a = [rng.randint(1, 3) for _ in range(6)]
        b = [rng.randint(1, 4) for _ in range(6)]
        expected = kendalltau(a, b).statistic
        ours = kendall_tau_b(a, b)
        if ours is None:
            assert expected != expected  # scipy: nan when one side is all ties
        else:
            assert ours == pytest.approx(expected)


def test_kendall_w_on_known_cases() -> None:
    assert kendall_w([[1, 2, 3, 4]] * 3) == pytest.approx(1.0)
    assert kendall_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)
    # Three judges, four items, by hand: rank sums 4, 7, 9, 10 (mean 7.5), S = 21,
    # W = 12 * 21 / (9 * 60) = 0.4667.
    assert kendall_w([[1, 2, 3, 4], [2, 1, 4, 3], [1, 4, 2, 3]]) == pytest.approx(0.46667, 1e-4)
    # Ties corrected: two judges tie the middle pair; W < 1 only through the third.
    w = kendall_w([[1, 2, 2, 3], [1, 2, 2, 3], [1, 3, 2, 4]])
    assert w is not None and 0.9 < w < 1.0
    assert kendall_w([[1, 2, 3]]) is None
    assert kendall_w([[1, 1], [1, 1]]) is None


def test_consensus_finds_the_condorcet_winner_and_breaks_a_cycle_by_strength() -> None:
    # 0 beats 1 and 2 in most rankings; Borda and ranked pairs both put it first.
    profile = [[1, 2, 3], [1, 3, 2], [2, 1, 3]]
    assert ranked_pairs(profile)[0] == 1 and borda(profile)[0] == 1
    # A cycle 0>1 (3-2), 1>2 (4-1), 2>0 (3-2)... ranked pairs locks 1>2 first, then 0>1,
    # and drops 2>0: the result is 0, 1, 2.
    cycle = [[1, 2, 3], [1, 2, 3], [2, 3, 1], [3, 1, 2], [3, 1, 2]]
    assert ranked_pairs(cycle) == [1, 2, 3]
    # Everyone ties 0 and 1: so does the consensus.
    assert ranked_pairs([[1, 1, 2], [1, 1, 2]]) == [1, 1, 2]
    assert borda([[1, 1, 2], [1, 1, 2]]) == [1, 1, 2]


def _noisy(truth: list[int], swaps: int, rng: random.Random) -> list[int]:
    """The true ranking after ``swaps`` random adjacent transpositions."""
    order = sorted(range(len(truth)), key=lambda i: truth[i])
    for _ in range(swaps):
        j = rng.randrange(len(order) - 1)
        order[j], order[j + 1] = order[j + 1], order[j]
    return ranks_of([[i] for i in order], len(truth))


def test_on_synthetic_annotators_the_consensus_beats_each_and_the_careless_one_stands_out() -> None:
    """200 tasks of 5 responses with a known true order; four careful annotators (1 random
    adjacent swap) and one careless (8 swaps)."""
    rng = random.Random(1)
    truth = [1, 2, 3, 4, 5]
    rankings: dict[str, dict[str, list[int]]] = {}
    names = [f"careful{i}" for i in range(4)] + ["careless"]
    own: dict[str, list[float]] = {name: [] for name in names}
    consensus_vs_truth: dict[str, list[float]] = {"ranked-pairs": [], "borda": []}
    for task in range(200):
        by_name = {name: _noisy(truth, 8 if name == "careless" else 1, rng) for name in own}
        rankings[f"t{task}"] = by_name
        for name, ranks in by_name.items():
            own[name].append(pair_agreement(ranks, truth))
        consensus_vs_truth["ranked-pairs"].append(
            pair_agreement(ranked_pairs(list(by_name.values())), truth)
        )
        consensus_vs_truth["borda"].append(pair_agreement(borda(list(by_name.values())), truth))
    best_single = max(statistics.fmean(v) for v in own.values())
    for method in ("ranked-pairs", "borda"):
        assert statistics.fmean(consensus_vs_truth[method]) > best_single
    agreement = annotator_agreement(rankings, "ranked-pairs")
    assert min(agreement, key=lambda name: agreement[name]) == "careless"
    assert agreement["careless"] < min(v for k, v in agreement.items() if k != "careless") - 0.1
