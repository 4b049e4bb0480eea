"""Background work runs below the event loop: the loop thread first when the CPU is short.

The event loop answers refusals, health checks and small requests in a millisecond or two,
but when the model and the tokenizer keep every core busy, the scheduler gives the loop
its turn only after theirs, and a 429 or a ``/health`` waits 50-100 ms behind a batch
(measured: docs/hardening.md). Linux keeps a nice value per thread, so the threads that do
work proportional to the input (onnxruntime's workers, the batcher's model thread, the
tokenizer's threads) run at ``background_nice`` and the loop thread at the process's own.
Threads started by a lowered thread inherit its value (the tokenizer's pool starts on first
use, from a lowered thread). Inside a container the values rank the container's own
threads only; on a shared host they also yield the model's CPU to other processes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("rankrm.service")

_TASKS = Path("/proc/self/task")


def lower_this_thread(nice: int) -> None:
    """Run the calling thread (and the threads it starts) at ``nice``."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:  # a sandbox that forbids it: run as before
        log.warning("cannot lower the priority of background threads: %s", exc)


def thread_ids() -> set[int]:
    """Native ids of this process's threads (empty where /proc is not there)."""
    try:
        return {int(name) for name in os.listdir(_TASKS)}
    except OSError:
        return set()


@contextmanager
def lowering_new_threads(nice: int) -> Iterator[None]:
    """Lower every thread started inside the block (onnxruntime starts its workers while a
    session is built, from the thread building it)."""
    before = thread_ids()
    yield
    if nice <= 0:
        return
    for tid in sorted(thread_ids() - before):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as exc:  # gone already, or forbidden
            log.debug("cannot lower thread %d: %s", tid, exc)


def background_executor(nice: int, workers: int | None, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads run at ``nice``."""
    initializer: Callable[..., object] = lower_this_thread
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix=name, initializer=initializer, initargs=(nice,)
    )


def allowed_cores() -> list[int]:
    """The cores this thread may run on (empty where the platform does not say)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def worker_cores(workers: int, pin: bool | None, cores: list[int]) -> list[int]:
    """The core for each of ``workers`` threads, or none to leave them to the scheduler.
    ``pin`` None: pin when ``cores`` (those the process may use) are exactly one a worker;
    True: whenever there are enough of them; False: never."""
    if pin is False or len(cores) < workers or (pin is None and len(cores) != workers):
        return []
    return cores[:workers]


def pin_this_thread(cores: set[int]) -> None:
    """Run the calling thread on ``cores`` only."""
    try:
        os.sched_setaffinity(threading.get_native_id(), cores)
    except OSError as exc:  # a sandbox that forbids it: run as before
        log.warning("cannot pin a model thread to cores %s: %s", sorted(cores), exc)


def nice_of(tid: int) -> int:
    """The nice value of thread ``tid`` of this process (Linux)."""
    return os.getpriority(os.PRIO_PROCESS, tid)
