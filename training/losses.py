"""Ranking losses over a padded reward matrix, vectorised (no Python loop over pairs).

All take ``rewards`` of shape ``(B, K)``, ``ranks`` ``(B, K)`` (1 = best, equal = tie) and a
boolean ``mask`` ``(B, K)`` that is False on padding, so lists of different lengths share
one batch. Each list weighs the same however long it is.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from training.config import LossName

LOSSES: tuple[LossName, ...] = get_args(LossName)
DESCRIPTIONS: dict[str, str] = {  # how the model card names each loss
    "pairwise": "InstructGPT pairwise loss over all C(K,2) pairs of each list",
    "listwise": "Plackett-Luce (ListMLE) likelihood of each list's whole order",
    "article": "the article's -mean(sigmoid(r_i - r_j)) over all pairs of each list",
}


def preference_pairs(ranks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, K, K)`` bool: entry ``[b, i, j]`` is True when item i is ranked above item j."""
    valid = mask[:, :, None] & mask[:, None, :]  # (B, K, K)
    return valid & (ranks[:, :, None] < ranks[:, None, :])  # (B, K, K)


def _per_list_mean(values: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each list's pairs, then over lists that have any pair."""
    weights = pairs.to(values.dtype)  # (B, K, K)
    counts = weights.sum(dim=(1, 2))  # (B,)
    has_pairs = counts > 0
    per_list = (values * weights).sum(dim=(1, 2)) / counts.clamp(min=1)  # (B,)
    return per_list[has_pairs].mean()


def pairwise_loss(
    rewards: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """InstructGPT: mean over ordered pairs of ``-log sigmoid(r_i - r_j - margin)``."""
    diff = rewards[:, :, None] - rewards[:, None, :] - margin  # (B, K, K)
    return _per_list_mean(-F.logsigmoid(diff), preference_pairs(ranks, mask))


def article_loss(rewards: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The article's formula, ``-mean(sigmoid(r_i - r_j))``: kept only to reproduce it.

    Without the log its gradient vanishes as pairs get separated (and also when they are
    badly misordered); it is not InstructGPT's loss.
    """
    diff = rewards[:, :, None] - rewards[:, None, :]  # (B, K, K)
    return -_per_list_mean(torch.sigmoid(diff), preference_pairs(ranks, mask))


def listwise_loss(rewards: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce (ListMLE) negative log-likelihood of the given order, mean over lists.

    ``-log P(order) = sum_i [logsumexp_{j >= i} r_(j) - r_(i)]`` with items sorted best
    first. Ties are broken by input position (use ``pairwise`` for tied data).
    """
    big = torch.iinfo(torch.int64).max
    sort_key = torch.where(mask, ranks.long(), torch.full_like(ranks.long(), big))
    order = torch.sort(sort_key, dim=1, stable=True).indices  # (B, K) best first, padding last
    sorted_rewards = rewards.gather(1, order)  # (B, K)
    sorted_mask = mask.gather(1, order)  # (B, K)
    # A large finite stand-in for -inf keeps the backward pass free of NaN.
    masked = sorted_rewards.masked_fill(~sorted_mask, -1e9)  # (B, K)
    # logsumexp over the suffix j >= i: flip, cumulative logsumexp, flip back.
    suffix = torch.logcumsumexp(masked.flip(1), dim=1).flip(1)  # (B, K)
    terms = torch.where(sorted_mask, suffix - sorted_rewards, torch.zeros_like(suffix))
    return terms.sum(dim=1).mean()


def centering_term(rewards: torch.Tensor, mask: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``coefficient * mean(r^2)`` over real items: keeps rewards near zero (centred)."""
    return coefficient * rewards[mask].pow(2).mean()


def ranking_loss(
    name: LossName,
    rewards: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor,
    *,
    margin: float = 0.0,
    center_coefficient: float = 0.0,
) -> torch.Tensor:
    """The named loss plus the optional centering term."""
    if name == "pairwise":
        loss = pairwise_loss(rewards, ranks, mask, margin)
    elif name == "listwise":
        loss = listwise_loss(rewards, ranks, mask)
    elif name == "article":
        loss = article_loss(rewards, ranks, mask)
    else:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    if center_coefficient:
        loss = loss + centering_term(rewards, mask, center_coefficient)
    return loss
