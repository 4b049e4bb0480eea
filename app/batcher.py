"""Dynamic batching: one worker owns the model; requests' texts queue up and leave in
batches bounded by a size, a token budget that counts padding, and a short wait.

* Admission is checked without waiting: texts beyond ``max_queue``, or beyond what the
  model can work through in ``max_queue_wait_s`` at its measured speed, are refused at
  once (429), so nothing hangs and what is admitted finishes within its deadline.
* A batch is anchored on the oldest waiting text (nothing starves) and filled with the
  texts closest to it in length (little padding), within ``max_batch_size`` and
  ``max_batch_tokens`` (batch size x longest text).
* It leaves when full, or ``max_wait_ms`` after its oldest text arrived.
* In the model it may become several calls of similar lengths, where the padding saved
  pays for the extra calls, and none with more attention than ``max_call_attention``
  (:mod:`app.grouping`).
* Texts whose request is gone (client disconnected, timed out) are dropped before they
  cost compute; results are never set on a future that was cancelled.
* The model runs in worker threads, off the event loop: ``model_workers`` batches at once
  (each its own thread on the one session), so the next batch forms while one runs. A
  batch with nothing beside it (no other batch in the model, no text waiting) is *lone*:
  it runs on every core (the engine's second session) and the other workers wait for it.
  A failing batch fails its own texts only; the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

from app.config import Settings
from app.engine import Engine
from app.errors import ErrorKind, ServiceError
from app.grouping import cap_calls, padded_cost, plan_calls
from app.metrics import Metrics
from app.priority import background_executor
from rankrm.encoding import Tokens

log = logging.getLogger("rankrm.batcher")


# Batches of at least this many padded tokens measure the model's speed: in smaller ones the
# fixed cost of a call dominates, and the queue (which leaves in full batches) would look
# several times slower than it is.
_SPEED_SAMPLE_TOKENS = 512
_SPEED_SAMPLES = 16  # the estimate is the median of this many recent batches


@dataclass(frozen=True)
class Scored:
    """One text's raw reward and where its time went."""

    raw: float
    queue_s: float
    inference_s: float
    batch_size: int
    heads: tuple[float, ...] = ()  # a multi-output head's raw outputs (engine.heads)


@dataclass
class _Item:
    encoding: Tokens
    future: asyncio.Future[Scored]
    turn: int = 0  # its place within its request: requests take turns, text by text
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return len(self.encoding.ids)


class Batcher:
    """Queue of texts and the worker task that scores them in batches."""

    def __init__(
        self, engine: Engine, settings: Settings, metrics: Metrics, name: str | None = None
    ) -> None:
        self.engine = engine
        self.max_batch_size = settings.max_batch_size
        self.max_batch_tokens = settings.max_batch_tokens
        self.max_wait_s = settings.max_wait_ms / 1000
        self.max_queue = settings.max_queue
        self.max_queue_wait_s = settings.queue_wait_limit_s
        overhead = settings.split_overhead_tokens
        self.split_overhead_tokens = float("inf") if overhead is None else overhead
        self.max_call_attention = settings.call_attention_limit
        self.metrics = metrics
        self._pending: list[_Item] = []
        self._arrival = asyncio.Event()
        self.workers = settings.workers
        self.model = name or engine.name  # the label of this model's metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = background_executor(settings.background_nice, self.workers, "rankrm-model")
        self._recent_batch_s = 0.05  # for Retry-After estimates
        self._queued_tokens = 0  # tokens of the texts in _pending
        # Model seconds per padded token: the median of the last large batches' (a batch or
        # two starved by another process must not refuse requests for minutes); until one
        # has run, only the count of queued texts bounds the queue.
        self._s_per_token = 0.0
        self._speed_samples: deque[float] = deque(maxlen=_SPEED_SAMPLES)
        self._busy = 0  # batches in the model
        self._no_lone = asyncio.Event()  # set unless a lone batch has the cores
        self._no_lone.set()
        self._closing = False

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker tasks (on the running loop)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._loop(), name=f"batcher-{k}") for k in range(self.workers)
            ]

    @property
    def running(self) -> bool:
        """Whether the workers are alive."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def stop(self, drain_s: float = 30.0) -> None:
        """Refuse new texts, score those in hand (up to ``drain_s``), then stop the worker."""
        self._closing = True
        deadline = time.monotonic() + drain_s
        while (self._pending or self._busy) and self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(ServiceError(ErrorKind.NOT_READY, "shutting down"))
        self._pending.clear()
        self._queued_tokens = 0
        self._executor.shutdown(wait=True)

    # ----------------------------------------------------------------- admission
    @property
    def queued(self) -> int:
        """Texts waiting for a batch."""
        return len(self._pending)

    def expected_wait_s(self, extra_tokens: int = 0) -> float:
        """How long the queue (plus ``extra_tokens``) takes the model, at its measured speed
        (per worker; the workers run batches side by side)."""
        return (self._queued_tokens + extra_tokens) * self._s_per_token / self.workers

    def refusal(self, texts: int = 0, tokens: int = 0) -> ServiceError | None:
        """Why ``texts`` more texts (``tokens`` in all) cannot be queued now, or None.
        With no texts given: whether the queue is full already (checked before a request's
        body is even read)."""
        if not self.running or self._closing:
            return ServiceError(ErrorKind.NOT_READY, "the model worker is not running")
        waiting = len(self._pending)
        wait_s = self.expected_wait_s(tokens)
        if waiting + max(texts, 1) > self.max_queue:
            reason = f"queue full ({waiting} texts waiting, limit {self.max_queue})"
        elif wait_s > self.max_queue_wait_s:
            reason = (
                f"queue full (about {wait_s:.1f}s of work waiting, limit "
                f"{self.max_queue_wait_s:g}s)"
            )
        else:
            return None
        retry_after = max(self._recent_batch_s, wait_s - self.max_queue_wait_s)
        return ServiceError(ErrorKind.OVERLOADED, f"{reason}; retry later", retry_after=retry_after)

    def submit(self, encodings: list[Tokens]) -> list[asyncio.Future[Scored]]:
        """Queue texts; raises OVERLOADED at once if they do not fit."""
        refused = self.refusal(len(encodings), sum(len(e.ids) for e in encodings))
        if refused is not None:
            raise refused
        loop = asyncio.get_running_loop()
        items = [_Item(e, loop.create_future(), turn) for turn, e in enumerate(encodings)]
        self._pending.extend(items)
        self._queued_tokens += sum(item.tokens for item in items)
        self._gauge()
        self._arrival.set()
        return [item.future for item in items]

    # ----------------------------------------------------------------- the worker
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._pending:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            await self._wait_for_mates()
            if not self._no_lone.is_set():  # a lone batch has every core: start after it
                await self._no_lone.wait()
                continue
            batch = self._take_batch()
            self._gauge()
            if not batch:
                continue
            started = time.monotonic()
            lone = not self._busy and not self._pending  # nothing else for the cores to do
            if lone:
                self._no_lone.clear()
            self._busy += 1
            try:
                lengths = [item.tokens for item in batch]
                calls = plan_calls(lengths, self.split_overhead_tokens)
                calls = cap_calls(lengths, calls, self.max_call_attention)
                raw = await loop.run_in_executor(self._executor, self._run, batch, calls, lone)
            except Exception:
                log.exception("a batch of %d texts failed", len(batch))
                self.metrics.batch_failures.labels(self.model).inc()
                error = ServiceError(ErrorKind.MODEL_ERROR, "the model failed on this batch")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            finally:
                self._busy -= 1
                if lone:
                    self._no_lone.set()
            finished = time.monotonic()
            self._record(batch, calls, started, finished, lone)
            for item, (value, heads) in zip(batch, raw, strict=True):
                if not item.future.done():  # cancelled while it ran: nobody to tell
                    waited, ran = started - item.enqueued, finished - started
                    item.future.set_result(Scored(value, waited, ran, len(batch), heads))

    def _run(
        self, batch: list[_Item], calls: list[list[int]], lone: bool
    ) -> list[tuple[float, tuple[float, ...]]]:
        """Score ``batch`` in the worker thread, one model call per group of ``calls``:
        each text's raw reward and its head's outputs (none for a one-output model)."""
        raw: list[tuple[float, tuple[float, ...]]] = [(0.0, ())] * len(batch)
        for call in calls:
            values = self.engine.run([batch[i].encoding for i in call], lone=lone)
            if len(values) != len(call):
                raise RuntimeError(f"engine returned {len(values)} rewards for {len(call)}")
            for i, value in zip(call, values, strict=True):
                if value.ndim == 0:
                    raw[i] = (float(value), ())
                else:  # (1 + H,): the reward, then each output of the head
                    raw[i] = (float(value[0]), tuple(float(v) for v in value[1:]))
        return raw

    async def _wait_for_mates(self) -> None:
        """Wait until a batch is full or the oldest text has waited ``max_wait``."""
        deadline = self._pending[0].enqueued + self.max_wait_s
        while len(self._pending) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except TimeoutError:
                return

    def _drop_abandoned(self) -> None:
        before = len(self._pending)
        self._pending = [item for item in self._pending if not item.future.done()]
        if len(self._pending) != before:
            self.metrics.dropped_texts.labels(self.model).inc(before - len(self._pending))
            self._queued_tokens = sum(item.tokens for item in self._pending)

    def _take_batch(self) -> list[_Item]:
        """The texts owed a place first, then the texts nearest in length to the first of
        them, within both budgets.

        Requests take turns: the texts owed a place are those earliest in the order of
        (place within their request, arrival), a quarter of a batch, so a small request
        that arrives behind a 512-text one is in the next batch or two, not after all 512.
        A text that has waited longer than the queue's time bound goes before any other,
        so a stream of small requests cannot starve a large one. The rest of the batch is
        filled by length, which keeps padding low.
        """
        self._drop_abandoned()
        if not self._pending:
            return []
        pending = self._pending
        overdue = time.monotonic() - self.max_queue_wait_s  # waited past the queue's bound

        def order(i: int) -> tuple[bool, int, int]:
            return (pending[i].enqueued > overdue, pending[i].turn, i)

        owed = heapq.nsmallest(max(1, self.max_batch_size // 4), range(len(pending)), key=order)
        anchor = pending[owed[0]].tokens
        chosen = [owed[0]]
        longest = anchor
        taken = {owed[0]}
        by_length = sorted(
            (i for i in range(len(pending)) if i not in taken),
            key=lambda i: (abs(pending[i].tokens - anchor), i),
        )
        for i in (*owed[1:], *by_length):
            if len(chosen) == self.max_batch_size:
                break
            if i in taken:
                continue
            width = max(longest, pending[i].tokens)
            if width * (len(chosen) + 1) > self.max_batch_tokens:
                continue
            chosen.append(i)
            taken.add(i)
            longest = width
        batch = [pending[i] for i in sorted(chosen)]
        self._pending = [item for i, item in enumerate(pending) if i not in taken]
        self._queued_tokens -= sum(item.tokens for item in batch)
        return batch

    def _gauge(self) -> None:
        self.metrics.queue_size.labels(self.model).set(len(self._pending))
        self.metrics.queue_wait_estimate.labels(self.model).set(self.expected_wait_s())

    def _record(
        self,
        batch: list[_Item],
        calls: list[list[int]],
        started: float,
        finished: float,
        lone: bool,
    ) -> None:
        lengths = [item.tokens for item in batch]
        padded = padded_cost(lengths, calls, overhead=0)
        self._recent_batch_s = 0.8 * self._recent_batch_s + 0.2 * (finished - started)
        # The queue's speed is a worker's under load: small batches are mostly call overhead,
        # and a lone batch runs on every core, and is the one running when the load stops
        # (starved by whatever comes next, it measured ten times slower in make bench).
        if padded >= _SPEED_SAMPLE_TOKENS and not lone:
            self._speed_samples.append((finished - started) / padded)
            self._s_per_token = statistics.median(self._speed_samples)
        self.metrics.batch_size.labels(self.model).observe(len(batch))
        self.metrics.batch_calls.labels(self.model).observe(len(calls))
        self.metrics.batch_tokens.labels(self.model).observe(padded)
        self.metrics.batch_padding.labels(self.model).observe(1 - sum(lengths) / padded)
        self.metrics.inference_seconds.labels(self.model).observe(finished - started)
        for item in batch:
            self.metrics.queue_seconds.labels(self.model).observe(started - item.enqueued)
