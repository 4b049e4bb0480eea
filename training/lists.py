"""What every layout is read into: :class:`RankingList`, the errors that locate a bad
record, and the field checks the layouts share."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import TrainingError


class DataError(TrainingError, ValueError):
    """A malformed record, located by file and line (or JSON array item)."""

    def __init__(self, path: Path | str, where: str, problem: str) -> None:
        self.path = str(path)
        self.where = where
        self.problem = problem
        super().__init__(f"{self.path}:{where}: {problem}")


@dataclass(frozen=True)
class RankingList:
    """One prompt (optional) and K >= 2 responses in rank order, best first.

    ``ranks[i]`` is the rank of ``responses[i]`` (1 = best); equal ranks are ties.
    """

    prompt: str | None
    responses: tuple[str, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        k = len(self.responses)
        if k < 2:
            raise ValueError(f"a ranking list needs at least 2 responses, got {k}")
        for i, response in enumerate(self.responses):
            if not isinstance(response, str):
                raise ValueError(f"response {i} is {type(response).__name__}, not a string")
            if not response.strip():
                raise ValueError(f"response {i} is empty")
        seen: dict[str, int] = {}
        for i, response in enumerate(self.responses):
            if response in seen:
                raise ValueError(f"responses {seen[response]} and {i} are identical")
            seen[response] = i
        if len(self.ranks) != k:
            raise ValueError(f"{len(self.ranks)} ranks for {k} responses")
        if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in self.ranks):
            raise ValueError(f"ranks must be integers >= 1, got {list(self.ranks)}")
        if len(set(self.ranks)) < 2:
            raise ValueError("all responses are tied: the list holds no preference")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError(f"prompt is {type(self.prompt).__name__}, not a string")

    @classmethod
    def ordered(cls, prompt: str | None, responses: Sequence[str]) -> RankingList:
        """A list given best first, without ties."""
        return cls(prompt or None, tuple(responses), tuple(range(1, len(responses) + 1)))


@dataclass
class LoadResult:
    """Lists read from one file, and the records skipped under ``skip_bad``."""

    lists: list[RankingList]
    skipped: list[DataError] = field(default_factory=list)


def string_field(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def check_fields(record: Mapping[str, Any], allowed: set[str], layout: str) -> None:
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} for the {layout} layout (allowed: {sorted(allowed)})"
        )


def optional_string(value: Any) -> str | None:
    if value is None:
        return None
    return string_field(value, "prompt") or None


def split_dev(
    lists: Sequence[RankingList], fraction: float, seed: int
) -> tuple[list[RankingList], list[RankingList]]:
    """Hold out ``fraction`` of the lists (shuffled with ``seed``) as a dev set."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must be between 0 and 1, got {fraction}")
    order = list(range(len(lists)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(len(lists) * fraction))
    dev = [lists[i] for i in order[:n_dev]]
    train = [lists[i] for i in order[n_dev:]]
    if not train:
        raise ValueError("the dev fraction leaves no training lists")
    return train, dev
