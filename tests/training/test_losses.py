"""Each loss against a brute-force loop over pairs, on random lists of mixed lengths."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from training.losses import (
    article_loss,
    centering_term,
    listwise_loss,
    pairwise_loss,
    preference_pairs,
    ranking_loss,
)

Lists = list[tuple[list[float], list[int]]]


def random_lists(seed: int, n: int = 12, k_max: int = 6, ties: bool = True) -> Lists:
    """Lists of 2..k_max items with random rewards and ranks (with ties if asked)."""
    gen = torch.Generator().manual_seed(seed)
    out: Lists = []
    while len(out) < n:
        k = int(torch.randint(2, k_max + 1, (1,), generator=gen))
        rewards = torch.randn(k, generator=gen).mul(2).tolist()
        if ties:
            ranks = torch.randint(1, k + 1, (k,), generator=gen).tolist()
        else:
            ranks = (torch.randperm(k, generator=gen) + 1).tolist()
        if len(set(ranks)) > 1:
            out.append((rewards, ranks))
    return out


def pad(lists: Lists) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k_max = max(len(r) for r, _ in lists)
    rewards = torch.zeros(len(lists), k_max, dtype=torch.float64)
    ranks = torch.zeros(len(lists), k_max, dtype=torch.long)
    mask = torch.zeros(len(lists), k_max, dtype=torch.bool)
    for b, (r, k) in enumerate(lists):
        rewards[b, : len(r)] = torch.tensor(r, dtype=torch.float64)
        ranks[b, : len(k)] = torch.tensor(k)
        mask[b, : len(r)] = True
    # Garbage on padding must not matter.
    rewards = rewards.masked_fill(~mask, 123.0)
    ranks = ranks.masked_fill(~mask, 0)
    return rewards, ranks, mask


def brute_pair_mean(lists: Lists, term: object) -> float:
    per_list = []
    for rewards, ranks in lists:
        values = [
            term(rewards[i], rewards[j])  # type: ignore[operator]
            for i, j in itertools.permutations(range(len(rewards)), 2)
            if ranks[i] < ranks[j]
        ]
        per_list.append(sum(values) / len(values))
    return float(sum(per_list) / len(per_list))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_pairwise_matches_brute_force(seed: int, margin: float) -> None:
    lists = random_lists(seed)
    expected = brute_pair_mean(lists, lambda a, b: -log_sigmoid(a - b - margin))
    got = pairwise_loss(*pad(lists), margin=margin)
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_article_matches_brute_force(seed: int) -> None:
    lists = random_lists(seed)
    expected = -brute_pair_mean(lists, lambda a, b: 1 / (1 + math.exp(-(a - b))))
    assert article_loss(*pad(lists)).item() == pytest.approx(expected, rel=1e-9)


def plackett_luce_nll(rewards: list[float], ranks: list[int]) -> float:
    order = sorted(range(len(rewards)), key=lambda i: (ranks[i], i))  # ties: input order
    nll = 0.0
    for pos, item in enumerate(order):
        rest = [rewards[j] for j in order[pos:]]
        nll += math.log(sum(math.exp(r) for r in rest)) - rewards[item]
    return nll


@pytest.mark.parametrize("seed", range(5))
def test_listwise_matches_brute_force(seed: int) -> None:
    lists = random_lists(seed)
    expected = sum(plackett_luce_nll(r, k) for r, k in lists) / len(lists)
    assert listwise_loss(*pad(lists)).item() == pytest.approx(expected, rel=1e-9)


def test_each_list_weighs_the_same_however_long() -> None:
    short = ([1.0, 0.0], [1, 2])
    long = ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [1, 2, 3, 4, 5, 6])
    both = pairwise_loss(*pad([short, long])).item()
    alone = (pairwise_loss(*pad([short])).item() + pairwise_loss(*pad([long])).item()) / 2
    assert both == pytest.approx(alone)


def test_ties_give_no_pair() -> None:
    _, ranks, mask = pad([([0.3, 0.1, 0.9], [1, 1, 2])])
    pairs = preference_pairs(ranks, mask)
    assert pairs.sum().item() == 2  # (0, 2) and (1, 2); the tied (0, 1) is not a pair
    assert not pairs[0, 0, 1] and not pairs[0, 1, 0]


@pytest.mark.parametrize("name", ["pairwise", "listwise", "article"])
def test_gradients_are_finite_and_ignore_padding(name: str) -> None:
    rewards, ranks, mask = pad(random_lists(7))
    rewards.requires_grad_(True)
    ranking_loss(name, rewards, ranks, mask).backward()  # type: ignore[arg-type]
    assert rewards.grad is not None
    assert torch.isfinite(rewards.grad).all()
    assert (rewards.grad[~mask] == 0).all()
    assert rewards.grad[mask].abs().sum() > 0


def test_centering_adds_mean_squared_reward() -> None:
    lists = random_lists(3)
    rewards, ranks, mask = pad(lists)
    squares = [x * x for r, _ in lists for x in r]
    expected_term = 0.1 * sum(squares) / len(squares)
    assert centering_term(rewards, mask, 0.1).item() == pytest.approx(expected_term)
    with_term = ranking_loss("pairwise", rewards, ranks, mask, center_coefficient=0.1)
    assert with_term.item() == pytest.approx(
        pairwise_loss(rewards, ranks, mask).item() + expected_term
    )


def test_unknown_loss_is_refused() -> None:
    rewards, ranks, mask = pad(random_lists(0))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        ranking_loss("hinge", rewards, ranks, mask)  # type: ignore[arg-type]


def test_every_loss_the_cli_offers_is_implemented_and_described() -> None:
    import torch

    from training.losses import DESCRIPTIONS, LOSSES, ranking_loss

    assert set(DESCRIPTIONS) == set(LOSSES)
    rewards = torch.tensor([[2.0, 1.0, 0.0]])
    ranks, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.bool)
    for name in LOSSES:
        assert torch.isfinite(ranking_loss(name, rewards, ranks, mask))
