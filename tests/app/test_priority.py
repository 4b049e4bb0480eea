"""Background threads run below the event loop (Linux nice values per thread)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from app.priority import background_executor, lower_this_thread, lowering_new_threads, nice_of

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
