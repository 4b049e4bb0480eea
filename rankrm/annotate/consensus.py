"""Rankings with ties, their agreement, and the consensus of several.

An *order* is what an annotator submits: groups of response indices, best group first,
responses in one group tied (``[[2], [0, 3], [1]]``). *Ranks* are the same thing per
response: ``ranks[i]`` is the position of response ``i``'s group, 1 = best
(``[2, 3, 1, 2]`` for that order), rankrm's training format.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

Order = list[list[int]]
Ranks = list[int]


def validate_order(order: Any, k: int) -> Order:
    """``order`` checked to be a ranking with ties of responses ``0 .. k-1``; ValueError
    names the place that is wrong."""
    if not isinstance(order, list) or not order:
        raise ValueError("'order' must be a non-empty list of groups of response indices")
    seen: dict[int, str] = {}
    clean: Order = []
    for g, group in enumerate(order):
        if not isinstance(group, list) or not group:
            raise ValueError(f"order[{g}] must be a non-empty list of response indices")
        for p, index in enumerate(group):
            where = f"order[{g}][{p}]"
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < k:
                raise ValueError(f"{where}: {index!r} is not a response index (0 to {k - 1})")
            if index in seen:
                raise ValueError(f"{where}: response {index} is already placed at {seen[index]}")
            seen[index] = where
        clean.append(list(group))
    missing = sorted(set(range(k)) - set(seen))
    if missing:
        raise ValueError(f"'order' leaves out response(s) {missing}: rank all {k} of them")
    return clean


def ranks_of(order: Order, k: int) -> Ranks:
    """Ranks per response (1 = best, ties share a rank) from an order."""
    ranks = [0] * k
    for position, group in enumerate(order, start=1):
        for index in group:
            ranks[index] = position
    return ranks


def order_of(ranks: Sequence[float], higher_is_better: bool = False) -> Order:
    """Groups of equal values, best first: ranks (lower is better) or scores (higher)."""
    distinct = sorted(set(ranks), reverse=higher_is_better)
    return [[i for i, r in enumerate(ranks) if r == value] for value in distinct]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def pair_agreement(a: Ranks, b: Ranks) -> float:
    """Share of response pairs on which two rankings say the same: both prefer the same one,
    or both tie them."""
    pairs = list(combinations(range(len(a)), 2))
    same = sum(_sign(a[i] - a[j]) == _sign(b[i] - b[j]) for i, j in pairs)
    return same / len(pairs)


def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b between two rankings (ties corrected); None if one is all ties."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in combinations(range(len(a)), 2):
        sa, sb = _sign(a[i] - a[j]), _sign(b[i] - b[j])
        if sa == 0 and sb == 0:
            continue
        if sa == 0:
            ties_a += 1
        elif sb == 0:
            ties_b += 1
        elif sa == sb:
            concordant += 1
        else:
            discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return None if denominator == 0 else (concordant - discordant) / denominator


def _mid_ranks(ranks: Ranks) -> list[float]:
    """Ranks 1..n with tied responses sharing the mean of the places they span."""
    out = [0.0] * len(ranks)
    place = 1
    for group in order_of(ranks):
        mean = place + (len(group) - 1) / 2
        for index in group:
            out[index] = mean
        place += len(group)
    return out


def kendall_w(rankings: Sequence[Ranks]) -> float | None:
    """Kendall's coefficient of concordance W of m >= 2 rankings of the same n responses,
    corrected for ties: 1 = all agree, 0 = no agreement. None when undefined (fewer than two
    rankings, or every ranking ties everything)."""
    m = len(rankings)
    if m < 2:
        return None
    n = len(rankings[0])
    mid = [_mid_ranks(r) for r in rankings]
    totals = [sum(row[i] for row in mid) for i in range(n)]
    mean = m * (n + 1) / 2
    s = sum((t - mean) ** 2 for t in totals)
    ties = sum(len(g) ** 3 - len(g) for r in rankings for g in order_of(r))
    denominator = m * m * (n**3 - n) - m * ties
    return None if denominator <= 0 else 12 * s / denominator


def borda(rankings: Sequence[Ranks]) -> Ranks:
    """Borda count: each ranking gives a response one point per response below it and half a
    point per response tied with it; equal totals tie."""
    n = len(rankings[0])
    points = [0.0] * n
    for ranks in rankings:
        for i in range(n):
            points[i] += sum(ranks[j] > ranks[i] for j in range(n))
            points[i] += 0.5 * sum(ranks[j] == ranks[i] for j in range(n) if j != i)
    return ranks_of(order_of(points, higher_is_better=True), n)


def _reaches(edges: dict[int, set[int]], start: int, goal: int) -> bool:
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in edges[node] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return False


def ranked_pairs(rankings: Sequence[Ranks]) -> Ranks:
    """Tideman's ranked pairs: lock pairwise majorities strongest first unless they would
    make a cycle, then rank by the locked graph. Responses no locked majority separates tie."""
    n = len(rankings[0])
    majorities = []
    for i, j in combinations(range(n), 2):
        margin = sum(_sign(r[j] - r[i]) for r in rankings)  # > 0: i preferred to j
        if margin:
            winner, loser = (i, j) if margin > 0 else (j, i)
            majorities.append((abs(margin), winner, loser))
    majorities.sort(key=lambda m: (-m[0], m[1], m[2]))
    edges: dict[int, set[int]] = {i: set() for i in range(n)}
    for _, winner, loser in majorities:
        if not _reaches(edges, loser, winner):
            edges[winner].add(loser)
    remaining, order = set(range(n)), []
    while remaining:
        beaten = {b for a in remaining for b in edges[a] if b in remaining}
        top = sorted(remaining - beaten)
        order.append(top)
        remaining -= set(top)
    return ranks_of(order, n)


CONSENSUS = {"borda": borda, "ranked-pairs": ranked_pairs}
