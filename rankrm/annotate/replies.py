"""What the store answers: its refusals and the records it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rankrm.annotate.consensus import Order


class AnnotateError(Exception):
    """A request the store refuses: ``status`` is the HTTP status, ``code`` a stable word."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(message)


def conflict(message: str) -> AnnotateError:
    return AnnotateError(409, "conflict", message)


@dataclass(frozen=True)
class LoadReport:
    added: int
    unchanged: int


@dataclass(frozen=True)
class Progress:
    total: int  # tasks
    complete: int  # tasks with all N judgements
    judgements: int  # rankings and cannot-rank flags, all annotators
    mine: int  # this annotator's


@dataclass(frozen=True)
class Shown:
    """A task as the page shows it: responses in an order shuffled per assignment."""

    assignment: str
    task_id: str
    prompt: Any
    responses: list[dict[str, Any]]  # {"index": original index, "text"}
    expires_at: float
    previous: Order | None = None  # the ranking being undone, to start from
    previous_reason: str | None = None
