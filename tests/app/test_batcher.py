"""Batch formation: budgets that count padding, requests taking turns, no starvation,
grouping by length."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from app.batcher import Batcher, _Item
from app.config import Settings
from app.errors import ServiceError
from app.metrics import Metrics


class CountingEngine:
    name = "fake"
    max_length = 512
    heads: list[str] = []  # noqa: RUF012 (read only)

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.lone: list[bool] = []  # per call: whether it was run as a lone batch

    def run(self, encodings: Any, *, lone: bool = False) -> np.ndarray:
        self.batches.append([len(e.ids) for e in encodings])
        self.lone.append(lone)
        return np.array([float(len(e.ids)) for e in encodings], dtype=np.float32)


def make(max_batch_size: int = 32, max_batch_tokens: int = 8192, **kw: Any) -> Batcher:
    settings = Settings(model_dir=Path("unused"), max_batch_size=max_batch_size,
                        max_batch_tokens=max_batch_tokens, **kw)  # fmt: skip
    return Batcher(cast(Any, CountingEngine()), settings, Metrics.create())


def texts(*lengths: int) -> list[Any]:
    return [SimpleNamespace(ids=[0] * n) for n in lengths]


async def scored(batcher: Batcher, lengths: list[int]) -> list[list[int]]:
    batcher.start()
    futures = batcher.submit(texts(*lengths))
    results = await asyncio.gather(*futures)
    assert [r.raw for r in results] == [float(n) for n in lengths]  # each gets its own answer
    await batcher.stop()
    return cast(Any, batcher.engine).batches  # type: ignore[no-any-return]


def test_token_budget_counts_padding() -> None:
    batches = asyncio.run(scored(make(max_batch_tokens=400), [100, 10, 10, 10, 100, 100, 100]))
    for batch in batches:
        assert max(batch) * len(batch) <= 400
    assert sorted(n for b in batches for n in b) == [10, 10, 10, 100, 100, 100, 100]


def test_similar_lengths_share_a_batch() -> None:
    batches = asyncio.run(scored(make(max_batch_size=3), [10, 100, 11, 101, 12, 102]))
    assert sorted(sorted(b) for b in batches) == [[10, 11, 12], [100, 101, 102]]


def test_a_batch_of_spread_lengths_runs_as_calls_of_similar_lengths() -> None:
    calls = asyncio.run(scored(make(split_overhead_tokens=20), [10, 100, 11, 101, 12, 102]))
    assert sorted(sorted(c) for c in calls) == [[10, 11, 12], [100, 101, 102]]


def test_without_a_call_overhead_a_batch_is_one_call() -> None:
    assert asyncio.run(scored(make(), [10, 100, 11, 101])) == [[10, 11, 100, 101]]  # by length


def taken_in_turn(batcher: Batcher, *requests: list[int]) -> list[list[int]]:
    """Queue ``requests`` (lengths each) and take batches until none is left: their lengths."""

    async def go() -> list[list[int]]:
        for lengths in requests:
            batcher.submit(texts(*lengths))
        batches = []
        while batch := batcher._take_batch():
            batches.append([item.tokens for item in batch])
        return batches

    batcher._alive = batcher.workers  # as if started: submit refuses texts otherwise
    return asyncio.run(go())


def test_texts_that_would_pad_the_call_wait_for_their_own_batch() -> None:
    one_text_requests = [[n] for n in (10, 100, 11, 101, 12, 102)]
    batches = taken_in_turn(make(split_overhead_tokens=20), *one_text_requests)
    assert batches == [[10, 11, 12], [100, 101, 102]]


def test_a_text_left_out_costs_the_call_more_than_it_adds() -> None:
    # the 12 pads the two 10s by 4 tokens: worth it where a call costs 40 tokens, not 4
    assert taken_in_turn(make(split_overhead_tokens=40), [10], [10], [12]) == [[10, 10, 12]]
    assert taken_in_turn(make(split_overhead_tokens=4), [10], [10], [12]) == [[10, 10], [12]]


def test_without_a_call_overhead_the_whole_batch_leaves() -> None:
    assert taken_in_turn(make(), [10], [100], [11], [101]) == [[10, 100, 11, 101]]


def test_a_request_keeps_its_owed_texts_together_whatever_their_lengths() -> None:
    batcher = make(max_batch_size=8, split_overhead_tokens=4)  # 2 texts a batch are owed
    assert taken_in_turn(batcher, [10, 100, 10]) == [[10, 100], [10]]


def test_the_oldest_text_is_always_in_the_next_batch() -> None:
    batches = asyncio.run(scored(make(max_batch_size=2), [50, 10, 10, 10, 10]))
    assert 50 in batches[0]


def test_a_small_request_behind_a_large_one_takes_turns_with_it() -> None:
    async def go() -> list[list[int]]:
        batcher = make(max_batch_size=8)  # 2 texts a batch are owed by turn
        batcher.start()
        bulk = batcher.submit(texts(*[10] * 64))
        small = batcher.submit(texts(*[20] * 4))
        await asyncio.gather(*bulk, *small)
        await batcher.stop()
        return cast(Any, batcher.engine).batches  # type: ignore[no-any-return]

    batches = asyncio.run(go())
    last_small = max(i for i, batch in enumerate(batches) if 20 in batch)
    assert last_small <= 2, batches  # not after the 64 texts (8 batches) queued before it


def test_texts_past_the_queue_bound_go_first() -> None:
    async def go() -> list[list[int]]:
        batcher = make(max_batch_size=2, max_queue_wait_s=5)
        batcher.start()
        old = batcher.submit(texts(*[30] * 3))  # turns 0, 1, 2
        for item in batcher._pending:  # as if queued 6 s ago: past the 5 s bound
            item.enqueued -= 6
        new = [batcher.submit(texts(10)) for _ in range(4)]  # turn 0 each
        await asyncio.gather(*old, *(f for futures in new for f in futures))
        await batcher.stop()
        return cast(Any, batcher.engine).batches  # type: ignore[no-any-return]

    batches = asyncio.run(go())
    assert batches[0] == [30, 30] and 30 in batches[1], batches


def test_a_fault_planning_the_calls_fails_that_batch_and_the_worker_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faults = iter([RuntimeError("planning broke")])

    def plan_once_broken(lengths: list[int], overhead: float) -> list[list[int]]:
        if fault := next(faults, None):
            raise fault
        return [list(range(len(lengths)))]

    monkeypatch.setattr("app.batcher.plan_calls", plan_once_broken)

    async def go() -> tuple[ServiceError, list[float]]:
        batcher = make()
        batcher.start()
        (first,) = batcher.submit(texts(10))
        with pytest.raises(ServiceError) as caught:
            await asyncio.wait_for(first, 5)
        later = await asyncio.wait_for(asyncio.gather(*batcher.submit(texts(20, 30))), 5)
        await batcher.stop()
        return caught.value, [r.raw for r in later]

    error, later = asyncio.run(go())
    assert "model failed" in str(error)
    assert later == [20.0, 30.0]


def test_a_fault_forming_a_batch_sends_the_oldest_text_alone_and_the_worker_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    faults = iter([RuntimeError("forming broke")])
    take_batch = Batcher._take_batch

    def take_once_broken(self: Batcher) -> list[_Item]:
        if fault := next(faults, None):
            raise fault
        return take_batch(self)

    monkeypatch.setattr(Batcher, "_take_batch", take_once_broken)

    async def go() -> tuple[list[float], bool, list[list[int]]]:
        batcher = make(model_workers=1)
        batcher.start()
        futures = batcher.submit(texts(10, 20, 30))  # queued at once, under the lock
        first = await asyncio.wait_for(asyncio.gather(*futures), 5)
        later = await asyncio.wait_for(asyncio.gather(*batcher.submit(texts(40))), 5)
        running = batcher.running
        await batcher.stop()
        batches = cast(Any, batcher.engine).batches
        return [r.raw for r in (*first, *later)], running, batches

    answers, running, batches = asyncio.run(go())
    assert answers == [10.0, 20.0, 30.0, 40.0] and running
    assert batches[0] == [10] and sorted(n for b in batches for n in b) == [10, 20, 30, 40]
    assert "the oldest text goes alone" in caplog.text


def test_a_fault_after_the_model_keeps_the_answers_and_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("metrics broke")

    monkeypatch.setattr(Batcher, "_record", broken)

    async def go() -> list[float]:
        batcher = make()
        batcher.start()
        first = await asyncio.wait_for(asyncio.gather(*batcher.submit(texts(10))), 5)
        later = await asyncio.wait_for(asyncio.gather(*batcher.submit(texts(20))), 5)
        await batcher.stop()
        return [r.raw for r in (*first, *later)]

    assert asyncio.run(go()) == [10.0, 20.0]


def test_full_queue_is_refused_at_once() -> None:
    async def go() -> None:
        batcher = make(max_queue=512, max_items=512)
        batcher.start()
        batcher.submit(texts(*[5] * 500))
        with pytest.raises(ServiceError) as info:
            batcher.submit(texts(*[5] * 13))
        assert info.value.retry_after is not None
        await batcher.stop()

    asyncio.run(go())


def test_stop_refuses_new_texts() -> None:
    async def go() -> None:
        batcher = make()
        batcher.start()
        await batcher.stop()
        with pytest.raises(ServiceError, match="not running"):
            batcher.submit(texts(5))

    asyncio.run(go())


class SleepingEngine(CountingEngine):
    """Each call sleeps ``delay_s`` and notes when it ran and whether it was lone."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.spans: list[tuple[float, float]] = []

    def run(self, encodings: Any, *, lone: bool = False) -> np.ndarray:
        started = time.monotonic()
        time.sleep(self.delay_s)
        self.spans.append((started, time.monotonic()))
        return super().run(encodings, lone=lone)


def test_a_batch_alone_in_the_model_with_nothing_waiting_runs_lone() -> None:
    batcher = make(model_workers=2)
    asyncio.run(scored(batcher, [10, 12, 11]))
    assert cast(Any, batcher.engine).lone == [True]


def test_a_batch_with_texts_left_waiting_or_another_in_the_model_is_not_lone() -> None:
    batcher = make(max_batch_size=2, model_workers=2)
    asyncio.run(scored(batcher, [10] * 6))
    assert cast(Any, batcher.engine).lone[:2] == [False, False]  # 4 left; then one running


def test_no_batch_starts_while_a_lone_batch_has_the_cores() -> None:
    """The other worker waits for a lone batch to end instead of running beside it (the
    lone batch's threads would share the cores with it)."""
    engine = SleepingEngine(0.2)
    settings = Settings(model_dir=Path("unused"), model_workers=2)
    batcher = Batcher(cast(Any, engine), settings, Metrics.create())

    async def go() -> None:
        batcher.start()
        first = batcher.submit(texts(10))
        await asyncio.sleep(0.05)  # the first is in the model now
        second = batcher.submit(texts(10))
        await asyncio.gather(*first, *second)
        await batcher.stop()

    asyncio.run(go())
    assert engine.lone == [True, True]
    (_, first_ended), (second_started, _) = sorted(engine.spans)
    assert second_started >= first_ended


def test_long_texts_run_as_calls_within_the_attention_limit() -> None:
    """The default limit on CPU is 4 texts of 128 tokens a call; short texts stay whole."""
    assert asyncio.run(scored(make(), [128] * 8)) == [[128] * 4, [128] * 4]
    assert asyncio.run(scored(make(), [32] * 16)) == [[32] * 16]


def test_the_attention_limit_is_four_long_texts_on_cpu_and_none_on_a_gpu() -> None:
    assert Settings(model_dir=Path("unused")).call_attention_limit == 4 * 128**2
    assert Settings(model_dir=Path("unused"), provider="cuda").call_attention_limit == float("inf")
    assert Settings(model_dir=Path("unused"), max_call_attention=100).call_attention_limit == 100


def test_only_batches_run_beside_others_measure_the_queue_speed() -> None:
    """A lone batch runs on every core, so its time says nothing of a worker's speed under
    load (and, the last batch before a lull, it is the one starved by what comes next)."""
    lone = make(model_workers=2)
    asyncio.run(scored(lone, [32] * 32))  # 1024 padded tokens, alone
    assert cast(Any, lone.engine).lone == [True]
    assert lone.expected_wait_s(1000) == 0  # not measured yet
    loaded = make(max_batch_size=16, model_workers=2)
    asyncio.run(scored(loaded, [32] * 64))
    assert loaded.expected_wait_s(1000) > 0


def test_a_few_starved_batches_do_not_move_the_queue_speed() -> None:
    """The speed is the median of recent batches: two that ran ten times slower (another
    process took the cores) leave it as it was; a lasting slowdown moves it."""
    batcher = make()
    loop = asyncio.new_event_loop()
    items = [_Item(encoding, loop.create_future()) for encoding in texts(*[32] * 32)]
    calls = [list(range(32))]  # 1024 padded tokens

    def ran(seconds: float) -> None:
        batcher._record(items, calls, 0.0, seconds, lone=False)

    for _ in range(10):
        ran(0.1)
    for _ in range(2):
        ran(1.0)
    assert batcher.expected_wait_s(1024) == pytest.approx(0.1 / batcher.workers)
    for _ in range(8):
        ran(1.0)
    assert batcher.expected_wait_s(1024) == pytest.approx(1.0 / batcher.workers)
    loop.close()


def test_a_worker_takes_its_next_batch_without_the_event_loop() -> None:
    """Batches form on the worker threads: while the event loop is busy elsewhere (here:
    blocked), a worker that finishes a batch goes straight on to the next."""
    engine = SleepingEngine(0.05)
    settings = Settings(model_dir=Path("unused"), model_workers=1, max_batch_size=2)
    batcher = Batcher(cast(Any, engine), settings, Metrics.create())

    async def go() -> None:
        batcher.start()
        futures = batcher.submit(texts(10, 10, 10, 10, 10, 10))
        time.sleep(0.5)  # the loop does not run: three batches of 0.05 s fit in this
        assert len(engine.spans) == 3
        await asyncio.gather(*futures)
        await batcher.stop()

    asyncio.run(go())
