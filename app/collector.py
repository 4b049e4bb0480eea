"""Full garbage collections on the service's schedule, not in the middle of a storm.

A full (generation 2) collection walks every tracked object the process holds and stops
the event loop until it is done. Under overload the objects of queued and held requests
(80,000 with 512 connections, measured) reach the old generation, so Python's own rule
(a full collection once the old generation has grown by a quarter) ran one every few
seconds, each stopping the loop for 40-85 ms: the worst 1 % of refusals and ``/health``
answers were those caught behind one (docs/hardening.md). Young collections stay as they
are; full ones run every ``interval_s`` instead, so cyclic garbage that reached the old
generation lives at most that long.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Histogram

log = logging.getLogger("rankrm.service")

_NEVER = 1 << 30  # young collections before Python considers a full one by itself


@asynccontextmanager
async def scheduled_full_collections(interval_s: float, seconds: Histogram) -> AsyncIterator[None]:
    """While the block runs, full collections happen every ``interval_s`` (timed into
    ``seconds``) and never by Python's own rule; ``interval_s=0`` changes nothing."""
    if interval_s <= 0:
        yield
        return
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)
    task = asyncio.get_running_loop().create_task(_collect_every(interval_s, seconds))
    try:
        yield
    finally:
        task.cancel()
        gc.set_threshold(young, middle, old)


async def _collect_every(interval_s: float, seconds: Histogram) -> None:
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        seconds.observe(took)
        log.debug("full garbage collection: %d objects freed in %.1f ms", found, took * 1000)
