"""GRPO's group statistics, computed as TRL's ``GRPOTrainer`` computes them: shared by the
service's ``/groups`` and ``rankrm score``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STD_EPSILON = 1e-4
"""Added to a group's standard deviation before dividing, as TRL's GRPO does."""


@dataclass(frozen=True)
class GroupStats:
    """One group's ranks (1 = best, ties share the better rank), advantages, mean and
    unbiased standard deviation (0 for a group of one)."""

    ranks: list[int]
    advantages: list[float]
    mean: float
    std: float


def group_stats(rewards: Sequence[float], scale: str = "group") -> GroupStats:
    """``(r - mean) / (std + 1e-4)`` per completion (``scale="none"``: ``r - mean``)."""
    r = np.array(rewards, dtype=np.float64)
    mean = float(r.mean())
    std = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    advantages = r - mean
    if scale == "group":
        advantages = advantages / (std + STD_EPSILON)
    ranks = [1 + sum(other > value for other in rewards) for value in rewards]
    return GroupStats(ranks, [float(a) for a in advantages], mean, std)
