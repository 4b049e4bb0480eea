"""What happens to tasks: loaded, shown to annotators, ranked, skipped, undone.

Every operation is one short transaction. The database's unique constraints (see ``schema``)
are the last word on who gets which task; an insert that loses a race is retried with the
next candidate, so nothing is lost or double-booked under concurrency.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rankrm.annotate.consensus import Order, Ranks, ranks_of, validate_order
from rankrm.annotate.model_loop import priority
from rankrm.annotate.replies import AnnotateError, LoadReport, Progress, Shown, conflict
from rankrm.annotate.schema import (
    ACTIVE,
    CANNOT_RANK,
    FINISHED,
    SKIPPED,
    SUBMITTED,
    Annotator,
    Assignment,
    Task,
)
from rankrm.annotate.tasks import TaskSpec

MAX_REASON = 2000
MAX_NAME = 200
_CANDIDATES = 20  # tasks tried per attempt before re-reading the queue
_ATTEMPTS = 10


@dataclass
class Store:
    """The annotation store over one database. ``overlap`` annotators judge each task; an
    assignment not finished within ``timeout`` seconds goes back to the queue."""

    engine: Engine
    overlap: int = 1
    timeout: float = 1800.0
    clock: Callable[[], float] = time.time
    sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        if self.overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {self.overlap}")
        if self.timeout <= 0:
            raise ValueError(f"assignment timeout must be positive, got {self.timeout}")
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------ tasks

    def load(self, tasks: Sequence[TaskSpec], source: str) -> LoadReport:
        """Add tasks not yet stored, all or none. A stored id with other content is an
        error naming it (its annotations would no longer match)."""
        now = self.clock()
        with self.sessions.begin() as session:
            stored = dict(session.execute(select(Task.id, Task.content_key)).all())
            last = session.scalar(select(func.max(Task.position)))
            position = -1 if last is None else last
            added = 0
            for spec in tasks:
                key = spec.content_key()
                if spec.id in stored:
                    if stored[spec.id] != key:
                        raise ValueError(
                            f"task {spec.id!r} is already stored with another prompt or "
                            "responses; give the changed task a new id"
                        )
                    continue
                position += 1
                session.add(
                    Task(
                        id=spec.id,
                        position=position,
                        prompt=spec.prompt,
                        responses=list(spec.responses),
                        meta=spec.meta,
                        content_key=key,
                        source=source,
                        created_at=now,
                    )
                )
                stored[spec.id] = key
                added += 1
        return LoadReport(added, len(tasks) - added)

    def unscored_tasks(self) -> list[tuple[str, Any, list[str]]]:
        """(id, prompt, responses) of the tasks the model has not scored, in load order."""
        with self.sessions() as session:
            rows = session.execute(
                select(Task.id, Task.prompt, Task.responses)
                .where(Task.model_rewards.is_(None))
                .order_by(Task.position)
            )
            return [(i, p, r) for i, p, r in rows]

    def set_priorities(self, values: Iterable[tuple[str, list[float], float]]) -> None:
        """Store the model's rewards and the resulting priority (smaller first) per task."""
        with self.sessions.begin() as session:
            for task_id, rewards, priority in values:
                task = session.get(Task, task_id)
                if task is not None:
                    task.model_rewards, task.priority = rewards, priority

    # ------------------------------------------------------------------ annotators

    def annotator(self, name: str) -> int:
        """The id of annotator ``name``, created on first use."""
        name = name.strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise AnnotateError(
                422, "invalid_request", f"'name' must be 1 to {MAX_NAME} printable characters"
            )
        for _ in range(2):  # a concurrent first login of the same name: read it back
            try:
                with self.sessions.begin() as session:
                    found = session.scalar(select(Annotator.id).where(Annotator.name == name))
                    if found is not None:
                        return found
                    annotator = Annotator(name=name, created_at=self.clock())
                    session.add(annotator)
                    session.flush()
                    return annotator.id
            except IntegrityError:
                continue
        raise conflict(f"annotator {name!r} could not be created; try again")

    def name_of(self, annotator_id: int) -> str:
        """The annotator's name (401 if unknown)."""
        with self.sessions() as session:
            annotator = session.get(Annotator, annotator_id)
            if annotator is None:
                raise AnnotateError(401, "unauthorized", "unknown annotator: log in again")
            return annotator.name

    # ------------------------------------------------------------------ the queue

    def next(self, annotator_id: int) -> Shown | None:
        """The annotator's current task, or a new one; None when none is left for them."""
        self._require(annotator_id)
        for _ in range(_ATTEMPTS):
            with self.sessions.begin() as session:
                now = self.clock()
                current = self._active(session, annotator_id)
                if current is not None:
                    current.expires_at = now + self.timeout
                    return self._shown(session, current)
                self._expire(session, now)
                candidates = self._candidates(session, annotator_id)
            if not candidates:
                return None
            for task_id, taken in candidates:
                shown = self._claim(annotator_id, task_id, taken)
                if shown is not None:
                    return shown
        raise conflict("too many annotators asked at once; ask again")

    def _require(self, annotator_id: int) -> None:
        self.name_of(annotator_id)  # 401 if unknown

    @staticmethod
    def _active(session: Session, annotator_id: int) -> Assignment | None:
        return session.scalars(
            select(Assignment)
            .where(Assignment.annotator_id == annotator_id, Assignment.status == ACTIVE)
            .order_by(Assignment.shown_at.desc())
            .limit(1)
        ).first()

    @staticmethod
    def _expire(session: Session, now: float) -> None:
        """Abandoned assignments give their task back (rows deleted: a late answer gets 409)."""
        for stale in session.scalars(
            select(Assignment).where(Assignment.status == ACTIVE, Assignment.expires_at < now)
        ):
            session.delete(stale)

    def _candidates(self, session: Session, annotator_id: int) -> list[tuple[str, list[int]]]:
        """Tasks with a free place that this annotator has not seen: the model's least sure
        first (when it scored them), then those closest to done, then in load order."""
        held = (
            select(Assignment.task_id, func.count().label("n"))
            .where(Assignment.slot.is_not(None))
            .group_by(Assignment.task_id)
            .subquery()
        )
        seen = select(Assignment.task_id).where(Assignment.annotator_id == annotator_id)
        count = func.coalesce(held.c.n, 0)
        rows = session.execute(
            select(Task.id)
            .outerjoin(held, held.c.task_id == Task.id)
            .where(count < self.overlap, Task.id.not_in(seen))
            .order_by(Task.priority.is_(None), Task.priority, count.desc(), Task.position)
            .limit(_CANDIDATES)
        ).all()
        ids = [row[0] for row in rows]
        slots: dict[str, list[int]] = {i: [] for i in ids}
        for task_id, slot in session.execute(
            select(Assignment.task_id, Assignment.slot).where(
                Assignment.task_id.in_(ids), Assignment.slot.is_not(None)
            )
        ):
            if slot is not None:
                slots[task_id].append(slot)
        return [(i, slots[i]) for i in ids]

    def _claim(self, annotator_id: int, task_id: str, taken: list[int]) -> Shown | None:
        """Take a free place of the task; None if others took them all first."""
        for slot in (s for s in range(self.overlap) if s not in taken):
            now = self.clock()
            try:
                with self.sessions.begin() as session:
                    assignment = Assignment(
                        id=uuid.uuid4().hex,
                        task_id=task_id,
                        annotator_id=annotator_id,
                        slot=slot,
                        status=ACTIVE,
                        shown_at=now,
                        expires_at=now + self.timeout,
                    )
                    session.add(assignment)
                    session.flush()
                    return self._shown(session, assignment)
            except IntegrityError:  # that place went to another annotator a moment ago
                continue
        return None

    @staticmethod
    def _shown(session: Session, assignment: Assignment, previous: bool = False) -> Shown:
        task = session.get_one(Task, assignment.task_id)
        indices = list(range(len(task.responses)))
        random.Random(assignment.id).shuffle(indices)  # per showing: no position bias
        return Shown(
            assignment=assignment.id,
            task_id=task.id,
            prompt=task.prompt,
            responses=[{"index": i, "text": task.responses[i]} for i in indices],
            expires_at=assignment.expires_at,
            previous=assignment.ranking if previous else None,
            previous_reason=assignment.reason if previous else None,
        )

    # ------------------------------------------------------------------ answers

    def _owned_active(self, session: Session, annotator_id: int, assignment_id: Any) -> Assignment:
        if not isinstance(assignment_id, str) or not assignment_id:
            raise AnnotateError(422, "invalid_request", "'assignment' must be an assignment id")
        assignment = session.get(Assignment, assignment_id)
        if assignment is None:
            raise conflict(
                f"assignment {assignment_id!r} is not open: it expired (the task went back to "
                "the queue) or was never given; ask for the next task"
            )
        if assignment.annotator_id != annotator_id:
            raise AnnotateError(403, "forbidden", f"assignment {assignment_id!r} is not yours")
        if assignment.status != ACTIVE:
            raise conflict(
                f"assignment {assignment_id!r} is already finished ({assignment.status})"
            )
        return assignment

    def _finish(
        self,
        annotator_id: int,
        assignment_id: Any,
        status: str,
        check: Callable[[Task], tuple[Order | None, str | None]],
    ) -> None:
        with self.sessions.begin() as session:
            assignment = self._owned_active(session, annotator_id, assignment_id)
            task = session.get_one(Task, assignment.task_id)
            ranking, reason = check(task)
            now = self.clock()
            assignment.status, assignment.ranking, assignment.reason = status, ranking, reason
            assignment.finished_at = now
            assignment.seconds = max(0.0, now - assignment.shown_at)
            if status == SKIPPED:
                assignment.slot = None  # the place goes to someone else
            if status == SUBMITTED and task.model_rewards is not None:
                session.flush()
                task.priority = priority(task.model_rewards, self._rankings(session, task))

    def submit(self, annotator_id: int, assignment_id: Any, order: Any) -> None:
        """Store a ranking (groups of response indices, best first, ties grouped)."""

        def check(task: Task) -> tuple[Order | None, str | None]:
            try:
                return validate_order(order, len(task.responses)), None
            except ValueError as exc:
                raise AnnotateError(422, "invalid_request", str(exc)) from None

        self._finish(annotator_id, assignment_id, SUBMITTED, check)

    def cannot_rank(self, annotator_id: int, assignment_id: Any, reason: Any) -> None:
        """Flag the task as impossible to rank, with the annotator's reason."""
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            raise AnnotateError(
                422, "invalid_request", f"'reason' must be 1 to {MAX_REASON} characters"
            )
        self._finish(annotator_id, assignment_id, CANNOT_RANK, lambda _: (None, reason.strip()))

    def skip(self, annotator_id: int, assignment_id: Any) -> None:
        """Pass the task to someone else; it is never shown to this annotator again."""
        self._finish(annotator_id, assignment_id, SKIPPED, lambda _: (None, None))

    def undo(self, annotator_id: int) -> Shown:
        """Reopen the annotator's last finished task (its previous answer returned to start
        from); the task they hold now goes back to the queue."""
        self._require(annotator_id)
        with self.sessions.begin() as session:
            last = session.scalars(
                select(Assignment)
                .where(Assignment.annotator_id == annotator_id, Assignment.status.in_(FINISHED))
                .order_by(Assignment.finished_at.desc())
                .limit(1)
            ).first()
            if last is None:
                raise conflict("nothing to undo: no task finished yet")
            if last.slot is None:  # skipped: take a place back, if one is free
                taken = set(
                    session.scalars(
                        select(Assignment.slot).where(
                            Assignment.task_id == last.task_id, Assignment.slot.is_not(None)
                        )
                    )
                )
                free = [s for s in range(self.overlap) if s not in taken]
                if not free:
                    raise conflict(
                        "cannot undo the skip: the task has since gone to other annotators"
                    )
                last.slot = free[0]
            current = self._active(session, annotator_id)
            if current is not None:
                session.delete(current)
            now = self.clock()
            last.status, last.shown_at, last.expires_at = ACTIVE, now, now + self.timeout
            last.finished_at = None
            session.flush()
            return self._shown(session, last, previous=True)

    @staticmethod
    def _rankings(session: Session, task: Task) -> list[Ranks]:
        orders = session.scalars(
            select(Assignment.ranking).where(
                Assignment.task_id == task.id, Assignment.status == SUBMITTED
            )
        )
        return [ranks_of(order, len(task.responses)) for order in orders if order]

    # ------------------------------------------------------------------ progress

    def progress(self, annotator_id: int | None = None) -> Progress:
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(Task)) or 0
            judged = and_(Assignment.status.in_((SUBMITTED, CANNOT_RANK)))
            per_task = (
                select(Assignment.task_id, func.count().label("n"))
                .where(judged)
                .group_by(Assignment.task_id)
                .subquery()
            )
            complete = session.scalar(
                select(func.count()).select_from(per_task).where(per_task.c.n >= self.overlap)
            )
            judgements = session.scalar(select(func.count()).where(judged)) or 0
            mine = 0
            if annotator_id is not None:
                mine = (
                    session.scalar(
                        select(func.count()).where(judged, Assignment.annotator_id == annotator_id)
                    )
                    or 0
                )
            return Progress(total, complete or 0, judgements, mine)
