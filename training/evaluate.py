"""Ranking metrics of a reward model on ranking lists."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau

from training.data import RankingList, RatedText
from training.model import RewardModel


def ranking_metrics(
    lists: Sequence[RankingList], rewards: Sequence[np.ndarray]
) -> dict[str, float]:
    """Metrics of ``rewards[b]`` (one array per list, aligned with its responses).

    * ``pairwise_accuracy``: share of ordered pairs (distinct ranks) scored in that order;
    * ``exact_order_accuracy``: share of lists whose every ordered pair is right (the
      article's metric);
    * ``kendall_tau``: mean Kendall tau-b between gold order and rewards;
    * ``mean_margin``: mean ``r_better - r_worse`` over ordered pairs;
    * ``reward_mean`` / ``reward_std`` over all responses.
    """
    correct = total = exact = 0
    margins: list[float] = []
    taus: list[float] = []
    for lst, scores in zip(lists, rewards, strict=True):
        ranks = np.asarray(lst.ranks)
        better = ranks[:, None] < ranks[None, :]  # (K, K): i ranked above j
        diff = scores[:, None] - scores[None, :]  # (K, K)
        right = int((diff[better] > 0).sum())
        pairs = int(better.sum())
        correct += right
        total += pairs
        exact += int(right == pairs)
        margins.extend(diff[better].tolist())
        tau = kendalltau(-ranks, scores).statistic
        if not math.isnan(tau):
            taus.append(float(tau))
    flat = np.concatenate(list(rewards)) if rewards else np.zeros(0)
    return {
        "pairwise_accuracy": correct / total if total else float("nan"),
        "exact_order_accuracy": exact / len(lists) if lists else float("nan"),
        "kendall_tau": float(np.mean(taus)) if taus else float("nan"),
        "mean_margin": float(np.mean(margins)) if margins else float("nan"),
        "reward_mean": float(flat.mean()) if flat.size else float("nan"),
        "reward_std": float(flat.std()) if flat.size else float("nan"),
        "lists": float(len(lists)),
        "pairs": float(total),
    }


def score_lists(
    reward_model: RewardModel, lists: Sequence[RankingList], batch_size: int = 64
) -> list[np.ndarray]:
    """Rewards of every response, one array per list."""
    prompts = [lst.prompt for lst in lists for _ in lst.responses]
    responses = [r for lst in lists for r in lst.responses]
    return split_per_list(lists, reward_model.score(prompts, responses, batch_size).numpy())


def split_per_list(lists: Sequence[RankingList], flat: np.ndarray) -> list[np.ndarray]:
    """Cut rewards of all responses, flattened list by list, back into one array per list."""
    sizes = [len(lst.responses) for lst in lists]
    if sum(sizes) != len(flat):
        raise ValueError(f"{len(flat)} rewards for {sum(sizes)} responses")
    return list(np.split(flat, np.cumsum(sizes)[:-1])) if sizes else []


def evaluate_lists(
    reward_model: RewardModel, lists: Sequence[RankingList], batch_size: int = 64
) -> dict[str, float]:
    """Score ``lists`` and return :func:`ranking_metrics`."""
    return ranking_metrics(lists, score_lists(reward_model, lists, batch_size))


def rated_pair_metrics(texts: Sequence[RatedText], rewards: np.ndarray) -> dict[str, float]:
    """Accuracy over *all* pairs of texts with different labels (same prompt), and over the
    polar pairs: the two lowest labels against the two highest (when there are 4 or more).
    For SST-5 the polar pairs are negative (0-1) against positive (3-4)."""
    labels = np.array([t.score for t in texts])
    prompts = np.array([t.prompt or "" for t in texts], dtype=object)
    distinct = np.unique(labels)
    polar_labels = len(distinct) >= 4
    low, high = distinct[:2], distinct[-2:]
    correct = total = polar_correct = polar_total = 0
    for prompt in np.unique(prompts):
        rows = prompts == prompt
        lab, rew = labels[rows], rewards[rows]
        better = lab[:, None] > lab[None, :]  # (n, n)
        right = (rew[:, None] - rew[None, :]) > 0  # (n, n)
        correct += int((better & right).sum())
        total += int(better.sum())
        if polar_labels:
            polar = better & np.isin(lab, high)[:, None] & np.isin(lab, low)[None, :]
            polar_correct += int((polar & right).sum())
            polar_total += int(polar.sum())
    out = {
        "all_pairs_accuracy": correct / total if total else float("nan"),
        "all_pairs": float(total),
    }
    if polar_total:
        out["polar_pairs_accuracy"] = polar_correct / polar_total
        out["polar_pairs"] = float(polar_total)
    return out
