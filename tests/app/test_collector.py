"""Full garbage collections on the service's schedule."""

from __future__ import annotations

import asyncio
import gc

from app.collector import scheduled_full_collections
from app.metrics import Metrics


def collections_timed(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("rankrm_full_gc_seconds_count")
    return value or 0.0


def test_full_collections_run_on_schedule_and_python_rule_is_restored() -> None:
    metrics = Metrics.create()
    before = gc.get_threshold()

    async def scenario() -> None:
        async with scheduled_full_collections(0.05, metrics.full_gc_seconds):
            assert gc.get_threshold()[:2] == before[:2]
            assert gc.get_threshold()[2] > 1_000_000  # Python's own rule is off
            await asyncio.sleep(0.3)
        assert collections_timed(metrics) >= 2

    asyncio.run(scenario())
    assert gc.get_threshold() == before


def test_interval_zero_leaves_python_rule() -> None:
    metrics = Metrics.create()
    before = gc.get_threshold()

    async def scenario() -> None:
        async with scheduled_full_collections(0, metrics.full_gc_seconds):
            assert gc.get_threshold() == before
            await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert collections_timed(metrics) == 0
