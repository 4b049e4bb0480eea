"""The annotation tables. One row of ``assignments`` follows one showing of a task to one
annotator from start to finish, so the database itself enforces the two promises:

* ``(task_id, annotator_id)`` is unique: a task never goes to the same annotator twice;
* ``(task_id, slot)`` is unique, with ``slot`` in ``0 .. overlap-1`` while the row holds one
  of the task's N places (active, submitted or cannot-rank) and NULL once it gave it up
  (skipped): a task is never given to more than N annotators, whatever runs concurrently.

Times are seconds since the epoch (floats), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


ACTIVE, SUBMITTED, CANNOT_RANK, SKIPPED = "active", "submitted", "cannot_rank", "skipped"
FINISHED = (SUBMITTED, CANNOT_RANK, SKIPPED)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)  # load order
    prompt: Mapped[Any] = mapped_column(JSON)  # text or chat messages
    responses: Mapped[list[str]] = mapped_column(JSON)
    meta: Mapped[Any] = mapped_column(JSON, nullable=True)
    content_key: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    # Model in the loop: the served model's rewards and how unsure it is (smaller = sooner).
    model_rewards: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    priority: Mapped[float | None] = mapped_column(Float, nullable=True)


class Annotator(Base):
    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "annotator_id", name="uq_assignment_task_annotator"),
        UniqueConstraint("task_id", "slot", name="uq_assignment_task_slot"),
        Index("ix_assignment_annotator_finished", "annotator_id", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, never reused
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    ranking: Mapped[list[list[int]] | None] = mapped_column(JSON, nullable=True)  # best first
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    shown_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # time on the task
