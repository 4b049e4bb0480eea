"""Split one batch into model calls of similar lengths when the padding saved pays for the
extra calls.

A padded call of ``n`` texts, the longest ``t`` tokens, costs about ``overhead + n * t``
token-times: on this machine, for MiniLM int8 run back to back, 0.4 ms a call plus 0.042
ms per padded token (the service measures its own figure at start-up, see
``OnnxEngine.call_overhead_tokens``). Measured, interleaved: 16 texts padded to 60 tokens
took 42.0 ms; the same count as calls of 4 x 15, 4 x 25, 4 x 35 and 4 x 60 tokens took
27.4 ms. The plan below is the exact minimum of that cost: texts sorted by length, cut
into contiguous runs, by dynamic programming over the distinct lengths (texts of equal
length never gain from being apart), vectorised so a plan takes microseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def plan_calls(lengths: Sequence[int], overhead_tokens: float) -> list[list[int]]:
    """Indices into ``lengths`` grouped into model calls, shortest texts first.

    Minimises ``sum(overhead_tokens + len(group) * max(lengths in group))``. An infinite
    overhead keeps one call; zero gives one call per distinct length.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not np.isfinite(overhead_tokens):
        return [order]
    distinct, counts = np.unique(np.asarray(lengths, dtype=np.float64), return_counts=True)
    before = np.concatenate([[0], np.cumsum(counts)])  # texts shorter than distinct[j]
    size = len(distinct)
    best = np.zeros(size + 1)  # best[j]: cheapest plan for the texts shorter than distinct[j]
    cut = np.zeros(size + 1, dtype=np.int64)  # where the last call of that plan starts
    for j in range(1, size + 1):
        # Last call covers distinct lengths i..j-1, padded to distinct[j-1].
        costs = best[:j] + overhead_tokens + (before[j] - before[:j]) * distinct[j - 1]
        cut[j] = int(np.argmin(costs))
        best[j] = costs[cut[j]]
    bounds = []
    j = size
    while j > 0:
        bounds.append((int(before[cut[j]]), int(before[j])))
        j = int(cut[j])
    return [order[start:stop] for start, stop in reversed(bounds)]


def best_call(lengths: Sequence[int], overhead_tokens: float, at_least: int) -> int:
    """How many of ``lengths`` (in the order given: texts that must go first, then by
    nearness in length) make the one call that uses the model best: the count, at least
    ``at_least``, with the most real tokens per unit of cost (``overhead_tokens`` plus its
    padded tokens). Ties go to the larger call, so an infinite overhead takes them all. A
    plain loop: the batcher runs it under the lock the event loop queues texts under."""
    best, keep, tokens, longest = -1.0, at_least, 0, 0
    for count, length in enumerate(lengths, 1):
        tokens += length
        longest = max(longest, length)
        use = tokens / (overhead_tokens + count * longest)
        if count >= at_least and use >= best:
            best, keep = use, count
    return keep


def cap_calls(
    lengths: Sequence[int], calls: Sequence[list[int]], max_attention: float
) -> list[list[int]]:
    """``calls`` with each call whose attention (texts x longest length squared) exceeds
    ``max_attention`` cut into the fewest equal parts that fit, in order.

    Calls of equal padded tokens are not equally fast: a call's attention scores grow with
    its length squared, and past the caches a call gets slower per token. Measured in the
    service on 2 cores (docs/benchmarks.md): texts of 128 tokens ran 4-8 % faster as calls of
    4 than of 8, while short and mixed texts (the same tokens a call, a quarter of the
    attention) lost when their calls were cut by tokens instead."""
    if not math.isfinite(max_attention):
        return list(calls)
    capped = []
    for call in calls:
        width = max(lengths[i] for i in call)
        fits = max(1, math.floor(max_attention / (width * width)))  # texts a call may hold
        step = math.ceil(len(call) / math.ceil(len(call) / fits))  # equal parts of <= fits
        capped += [call[k : k + step] for k in range(0, len(call), step)]
    return capped


def padded_cost(lengths: Sequence[int], groups: Sequence[Sequence[int]], overhead: float) -> float:
    """The cost ``plan_calls`` minimises, for a given grouping."""
    return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)
