"""Ranking metrics on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import RankingList
from training.evaluate import ranking_metrics


def test_metrics_on_a_hand_computed_example() -> None:
    lists = [RankingList.ordered(None, ["a", "b", "c"]), RankingList.ordered(None, ["d", "e"])]
    rewards = [np.array([3.0, 2.0, 1.0]), np.array([0.0, 1.0])]
    m = ranking_metrics(lists, rewards)
    assert m["pairwise_accuracy"] == pytest.approx(3 / 4)
    assert m["exact_order_accuracy"] == pytest.approx(1 / 2)
    assert m["kendall_tau"] == pytest.approx(0.0)  # +1 and -1
    assert m["mean_margin"] == pytest.approx((1 + 2 + 1 - 1) / 4)
    assert m["reward_mean"] == pytest.approx(1.4)
    assert m["reward_std"] == pytest.approx(np.std([3, 2, 1, 0, 1]))
    assert (m["lists"], m["pairs"]) == (2, 4)


def test_ties_in_gold_order_are_not_pairs() -> None:
    lists = [RankingList(None, ("a", "b", "c"), (1, 1, 2))]
    m = ranking_metrics(lists, [np.array([1.0, 5.0, 0.0])])
    assert m["pairwise_accuracy"] == 1.0
    assert m["exact_order_accuracy"] == 1.0
    assert m["pairs"] == 2


def test_equal_rewards_do_not_count_as_correct() -> None:
    lists = [RankingList.ordered(None, ["a", "b"])]
    assert ranking_metrics(lists, [np.array([0.5, 0.5])])["pairwise_accuracy"] == 0.0
