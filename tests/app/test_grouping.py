"""Splitting a batch into calls of similar lengths: the plan is the cheapest there is."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from app.grouping import cap_calls, padded_cost, plan_calls


def partitions(items: list[int]) -> Iterator[list[list[int]]]:
    """Every way to split ``items`` into non-empty groups (any order, not only by length)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in partitions(rest):
        yield [[first], *smaller]
        for i in range(len(smaller)):
            yield [*smaller[:i], [first, *smaller[i]], *smaller[i + 1 :]]


@pytest.mark.parametrize("seed", range(40))
def test_the_plan_is_the_cheapest_grouping_of_all(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 7))]
    overhead = rng.choice([0.0, 3.0, 10.0, 40.0, 500.0])
    plan = plan_calls(lengths, overhead)
    assert sorted(i for call in plan for i in call) == list(range(len(lengths)))
    cheapest = min(padded_cost(lengths, p, overhead) for p in partitions(list(range(len(lengths)))))
    assert padded_cost(lengths, plan, overhead) == pytest.approx(cheapest)


def test_a_spread_batch_splits_and_a_uniform_one_does_not() -> None:
    spread = [10, 60, 12, 58, 11, 61]
    assert sorted(sorted(spread[i] for i in c) for c in plan_calls(spread, 20)) == [
        [10, 11, 12],
        [58, 60, 61],
    ]
    assert len(plan_calls([30, 31, 32, 33, 34, 35], 20)) == 1


def test_limits_of_the_overhead() -> None:
    lengths = [5, 9, 5, 7]
    assert plan_calls(lengths, float("inf")) == [[0, 2, 3, 1]]  # one call, shortest first
    assert plan_calls(lengths, 0) == [[0, 2], [3], [1]]  # one call per distinct length
    assert plan_calls([], 10) == []


def test_large_batches_are_planned_too() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 512) for _ in range(4096)]
    plan = plan_calls(lengths, 12.0)
    assert sorted(i for call in plan for i in call) == list(range(4096))
    assert padded_cost(lengths, plan, 12.0) < padded_cost(lengths, [list(range(4096))], 12.0)


def test_a_call_of_long_texts_is_cut_into_equal_calls_within_the_attention_limit() -> None:
    lengths = [128] * 8
    assert cap_calls(lengths, [list(range(8))], 4 * 128**2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert cap_calls(lengths, [list(range(8))], 3 * 128**2) == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_calls_within_the_limit_and_no_limit_leave_the_plan_as_it_is() -> None:
    short = [36] * 28  # a full batch of short texts: a quarter of the attention of 8 x 128
    assert cap_calls(short, [list(range(28))], 4 * 128**2) == [list(range(28))]
    assert cap_calls([128] * 8, [list(range(8))], float("inf")) == [list(range(8))]


@pytest.mark.parametrize("seed", range(20))
def test_capped_calls_keep_every_text_once_in_order_and_fit_where_they_can(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 128) for _ in range(rng.randint(1, 40))]
    limit = rng.choice([1e3, 2e4, 65536.0])
    plan = plan_calls(lengths, 10.0)
    capped = cap_calls(lengths, plan, limit)
    assert [i for call in capped for i in call] == [i for call in plan for i in call]
    for call in capped:
        assert len(call) == 1 or len(call) * max(lengths[i] for i in call) ** 2 <= limit
