"""Model in the loop: a running ``rankrm serve`` scores every task's responses, and tasks the
model is least sure about come first. Its ranking is stored for the dashboard and never sent
to the annotation page (no anchoring).

A task's priority (smaller = sooner) is the smallest gap between two of its responses'
rewards, in the served reward's units; once people have ranked it, that gap is multiplied by
the model's mean agreement with them, so tasks where the model and people disagree move up.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

from rankrm.annotate.consensus import Ranks, order_of, pair_agreement, ranks_of

if TYPE_CHECKING:
    from rankrm.annotate.store import Store


def model_ranks(rewards: Sequence[float]) -> Ranks:
    """The model's ranking of the responses (higher reward = better; equal rewards tie)."""
    return ranks_of(order_of(rewards, higher_is_better=True), len(rewards))


def smallest_gap(rewards: Sequence[float]) -> float:
    ordered = sorted(rewards)
    return min(b - a for a, b in pairwise(ordered))


def priority(rewards: Sequence[float], human: Sequence[Ranks] = ()) -> float:
    """How soon the task should be judged (smaller = sooner); see the module docstring."""
    gap = smallest_gap(rewards)
    if not human:
        return gap
    model = model_ranks(rewards)
    agreement = sum(pair_agreement(model, ranks) for ranks in human) / len(human)
    return gap * agreement


def score_tasks(store: Store, reward_url: str, batch: int = 64) -> int:
    """Score the tasks the model has not scored yet; returns how many were scored."""
    from rankrm.client import RewardClient

    todo = store.unscored_tasks()
    with RewardClient(reward_url) as client:
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            results = client.groups([(prompt, responses) for _, prompt, responses in chunk])
            store.set_priorities(
                (task_id, result["rewards"], priority(result["rewards"]))
                for (task_id, _, _), result in zip(chunk, results, strict=True)
            )
    return len(todo)
