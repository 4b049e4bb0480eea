"""The store on SQLite and PostgreSQL: who gets which task, and every refusal."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from rankrm.annotate.database import make_engine, migrate, revision
from rankrm.annotate.replies import AnnotateError
from rankrm.annotate.schema import Assignment
from rankrm.annotate.store import Store
from rankrm.annotate.tasks import TaskSpec
from tests.annotate.conftest import make_tasks, open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_migrations_create_the_schema_once_and_reloading_tasks_adds_nothing(db_url: str) -> None:
    engine = make_engine(db_url)
    assert revision(engine) is None
    migrate(engine)
    migrate(engine)
    assert revision(engine) == "0001"
    store = Store(engine)
    assert store.load(make_tasks(3), "a.jsonl").added == 3
    report = store.load([*make_tasks(3), *make_tasks(1, prefix="new")], "a.jsonl")
    assert (report.added, report.unchanged) == (1, 3)
    changed = TaskSpec("t0", "another prompt", ("x", "y"))
    with pytest.raises(ValueError, match="'t0' is already stored with another prompt"):
        store.load([*make_tasks(1, prefix="later"), changed], "b.jsonl")
    assert store.progress().total == 4  # all or nothing: 'later0' was not added either
    engine.dispose()


def test_each_task_goes_to_overlap_annotators_never_twice_to_one(db_url: str) -> None:
    store = open_store(db_url, overlap=2)
    store.load(make_tasks(3), "f")
    people = [store.annotator(n) for n in ("ann", "bob", "cy")]
    seen: Counter[str] = Counter()
    for person in people:
        while (shown := store.next(person)) is not None:
            again = store.next(person)
            assert again is not None and again.assignment == shown.assignment  # the task held
            store.submit(person, shown.assignment, [[r["index"]] for r in shown.responses])
            seen[shown.task_id] += 1
    assert seen == {"t0": 2, "t1": 2, "t2": 2}
    progress = store.progress(people[0])
    assert (progress.total, progress.complete, progress.judgements) == (3, 3, 6)


def test_skip_frees_the_place_cannot_rank_keeps_it_and_undo_reopens(db_url: str) -> None:
    store = open_store(db_url, overlap=1)
    store.load(make_tasks(2, k=2), "f")
    ann, bob = store.annotator("ann"), store.annotator("bob")
    first = store.next(ann)
    assert first is not None and first.task_id == "t0"
    store.skip(ann, first.assignment)
    second = store.next(ann)
    assert second is not None and second.task_id == "t1"  # t0 is never offered to ann again
    store.cannot_rank(ann, second.assignment, "  both answers are empty ")
    assert store.next(ann) is None
    shown = store.next(bob)
    assert shown is not None and shown.task_id == "t0"  # the skipped place went to bob
    assert store.next(store.annotator("cy")) is None  # t1's one place is ann's flag
    reopened = store.undo(ann)
    assert reopened.task_id == "t1" and reopened.previous_reason == "both answers are empty"
    store.submit(ann, reopened.assignment, [[1, 0]])
    with pytest.raises(AnnotateError, match="the task has since gone to other annotators"):
        store.undo(ann)  # the last finished is now t1 again... then t0's skip is older
        store.undo(ann)


def test_undo_returns_the_ranking_and_puts_the_held_task_back(db_url: str) -> None:
    store = open_store(db_url, overlap=1)
    store.load(make_tasks(2), "f")
    ann = store.annotator("ann")
    first = store.next(ann)
    assert first is not None
    store.submit(ann, first.assignment, [[2], [0, 3], [1]])
    held = store.next(ann)
    assert held is not None and held.task_id == "t1"
    reopened = store.undo(ann)
    assert (reopened.task_id, reopened.previous) == ("t0", [[2], [0, 3], [1]])
    assert store.progress(ann).mine == 0
    other = store.next(store.annotator("bob"))
    assert other is not None and other.task_id == "t1"  # ann's held task went back
    with pytest.raises(AnnotateError, match="nothing to undo"):
        store.undo(store.annotator("cy"))


def test_refusals_name_the_problem_and_change_nothing(db_url: str) -> None:
    clock = Clock()
    store = open_store(db_url, overlap=1, timeout=60, clock=clock)
    store.load(make_tasks(1, k=3), "f")
    ann, bob = store.annotator("ann"), store.annotator("bob")
    shown = store.next(ann)
    assert shown is not None

    def refused(status: int, call: object, match: str) -> None:
        with pytest.raises(AnnotateError, match=match) as caught:
            assert callable(call)
            call()
        assert caught.value.status == status

    refused(422, lambda: store.submit(ann, shown.assignment, [[0], [1]]), r"leaves out .*\[2\]")
    refused(422, lambda: store.submit(ann, shown.assignment, [[0, 0], [1, 2]]), "already placed")
    refused(403, lambda: store.submit(bob, shown.assignment, [[0], [1], [2]]), "not yours")
    refused(409, lambda: store.submit(ann, "f" * 32, [[0], [1], [2]]), "is not open")
    refused(422, lambda: store.submit(ann, 17, [[0], [1], [2]]), "'assignment' must be")
    refused(422, lambda: store.cannot_rank(ann, shown.assignment, "  "), "'reason' must be")
    refused(401, lambda: store.next(999), "unknown annotator")
    refused(422, lambda: store.annotator("   "), "'name' must be")
    assert store.progress().judgements == 0
    store.submit(ann, shown.assignment, [[0], [1], [2]])
    refused(409, lambda: store.submit(ann, shown.assignment, [[0], [1], [2]]), "already finished")
    assert store.progress().judgements == 1


def test_an_abandoned_assignment_expires_and_its_late_answer_is_refused(db_url: str) -> None:
    clock = Clock()
    store = open_store(db_url, overlap=1, timeout=60, clock=clock)
    store.load(make_tasks(1), "f")
    ann, bob = store.annotator("ann"), store.annotator("bob")
    held = store.next(ann)
    assert held is not None and store.next(bob) is None
    clock.now += 61
    taken = store.next(bob)
    assert taken is not None and taken.task_id == held.task_id
    with pytest.raises(AnnotateError, match="expired") as caught:
        store.submit(ann, held.assignment, [[0], [1], [2], [3]])
    assert caught.value.status == 409
    store.submit(bob, taken.assignment, [[0], [1], [2], [3]])
    assert store.progress().complete == 1


def run_annotators(store: Store, people: int, seed: int = 0) -> Counter[tuple[str, str]]:
    """``people`` threads, each an annotator taking, ranking (and now and then skipping)
    tasks until none is left; returns (task, annotator) -> times ranked.

    A skip hands the task's place back to the others, so an annotator told "nothing left"
    asks again while anyone still works (as people coming back to the app would); they stop
    when all of them are told so and no skip or ranking landed since they last asked (one
    that asked just before another's skip landed must ask again)."""
    done: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []
    working = [people]  # annotators whose last answer from the store was a task
    changes = [0]  # skips and rankings landed so far

    def work(name: str) -> None:
        try:
            me = store.annotator(name)
            count = 0
            waiting = False
            while True:
                with lock:
                    seen = changes[0]
                shown = store.next(me)
                with lock:
                    if (shown is None) != waiting:
                        waiting = shown is None
                        working[0] += -1 if waiting else 1
                    settled = not working[0] and changes[0] == seen
                if shown is None:
                    if settled:
                        return
                    time.sleep(0.01)
                    continue
                count += 1
                if count % 17 == 0:
                    store.skip(me, shown.assignment)
                    with lock:
                        changes[0] += 1
                    continue
                store.submit(me, shown.assignment, [[r["index"]] for r in shown.responses])
                with lock:
                    done[(shown.task_id, name)] += 1
                    changes[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"a{i}",)) for i in range(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return done


@pytest.mark.slow
def test_eight_annotators_at_once_lose_no_task_and_book_none_twice(db_url: str) -> None:
    """500 tasks, overlap 3, 8 annotator threads at once against one database."""
    store = open_store(db_url, overlap=3)
    store.load(make_tasks(500, k=3), "f")
    done = run_annotators(store, people=8)
    per_task = Counter(task for task, _ in done)
    assert set(per_task) == {f"t{i}" for i in range(500)}  # none lost
    assert set(per_task.values()) == {3}  # each exactly 3 times
    assert set(done.values()) == {1}  # never twice by one annotator
    with store.sessions() as session:
        rows = session.execute(select(Assignment.task_id, Assignment.slot, Assignment.status))
        slots = Counter((t, s) for t, s, _ in rows if s is not None)
    assert set(slots.values()) == {1} and len(slots) == 1500
    assert store.progress().complete == 500


def test_a_plain_path_means_sqlite_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(str(tmp_path / "a.db"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    with pytest.raises(ValueError, match="in-memory database would lose the work"):
        make_engine(":memory:")
