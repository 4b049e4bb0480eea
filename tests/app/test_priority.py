"""Background threads run below the event loop (Linux nice values per thread)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from app.batcher import Batcher
from app.config import Settings
from app.metrics import Metrics
from app.priority import (
    allowed_cores,
    background_executor,
    lower_this_thread,
    lowering_new_threads,
    nice_of,
    worker_cores,
)
from tests.app.test_batcher import CountingEngine, texts

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


def nice_in_thread() -> int:
    """The nice value a new thread started here runs at."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(nice_of(threading.get_native_id())))
    thread.start()
    thread.join()
    return seen[0]


def test_threads_started_in_the_block_are_lowered_and_others_not() -> None:
    here = nice_of(threading.get_native_id())
    started = threading.Event()
    finish = threading.Event()
    ids: list[int] = []

    def wait() -> None:
        ids.append(threading.get_native_id())
        started.set()
        finish.wait(10)

    with lowering_new_threads(7):
        worker = threading.Thread(target=wait)
        worker.start()
        started.wait(10)
    try:
        assert nice_of(ids[0]) == max(here, 7)
        assert nice_of(threading.get_native_id()) == here  # the caller is untouched
    finally:
        finish.set()
        worker.join()


def test_a_lowered_thread_passes_its_value_to_threads_it_starts() -> None:
    seen: list[int] = []

    def parent() -> None:
        lower_this_thread(5)
        seen.append(nice_of(threading.get_native_id()))
        seen.append(nice_in_thread())

    thread = threading.Thread(target=parent)
    thread.start()
    thread.join()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen == [max(base, 5), max(base, 5)]


def test_background_executor_threads_run_lowered_and_zero_changes_nothing() -> None:
    base = nice_of(threading.get_native_id())
    with background_executor(11, 1, "test-low") as pool:
        assert pool.submit(lambda: nice_of(threading.get_native_id())).result() == max(base, 11)
    with background_executor(0, 1, "test-same") as pool:
        assert pool.submit(lambda: nice_of(threading.get_native_id())).result() == base


def test_model_workers_get_a_core_each_only_where_the_cores_are_theirs() -> None:
    assert worker_cores(2, None, [0, 1]) == [0, 1]  # a machine (or container) of 2 cores
    assert worker_cores(2, None, [4, 5]) == [4, 5]  # a container given cores 4 and 5
    assert worker_cores(2, None, list(range(16))) == []  # cores shared with others
    assert worker_cores(2, True, list(range(16))) == [0, 1]
    assert worker_cores(2, False, [0, 1]) == []
    assert worker_cores(3, True, [0, 1]) == []  # never two on one core
    assert worker_cores(2, None, []) == []  # the platform does not say


class WhereEngine(CountingEngine):
    """Notes, for each call, whether it was lone and the cores its thread may use."""

    def __init__(self) -> None:
        super().__init__()
        self.where: list[tuple[bool, int, set[int]]] = []

    def run(self, encodings: Any, *, lone: bool = False) -> Any:
        thread = threading.get_native_id()
        self.where.append((lone, thread, os.sched_getaffinity(0)))
        time.sleep(0.01)  # long enough for the other worker to take a batch beside it
        return super().run(encodings, lone=lone)


@pytest.mark.skipif(len(allowed_cores()) < 2, reason="needs 2 cores")
def test_pinned_model_workers_run_beside_each_other_on_a_core_each() -> None:
    """Batches beside another run on their worker's core only; a lone batch anywhere."""
    everywhere = set(allowed_cores())
    settings = Settings(
        model_dir=Path("unused"), model_workers=2, pin_model_threads=True, max_batch_size=2
    )
    engine = WhereEngine()
    batcher = Batcher(cast(Any, engine), settings, Metrics.create())

    async def go() -> None:
        batcher.start()
        await asyncio.gather(*batcher.submit(texts(*[5] * 12)))
        await asyncio.gather(*batcher.submit(texts(5)))  # alone: lone
        await batcher.stop()

    asyncio.run(go())
    beside = {(thread, frozenset(cores)) for lone, thread, cores in engine.where if not lone}
    assert len(beside) == 2 and all(len(cores) == 1 for _, cores in beside)
    assert len({cores for _, cores in beside}) == 2  # one core each, not the same one
    assert engine.where[-1][0] and engine.where[-1][2] == everywhere
    assert os.sched_getaffinity(0) == everywhere  # the caller is untouched
