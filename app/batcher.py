"""Dynamic batching: worker threads own the model; requests' texts queue up and leave in
batches bounded by a size, a token budget that counts padding, and a short wait.

* Admission is checked without waiting: texts beyond ``max_queue``, or beyond what the
  model can work through in ``max_queue_wait_s`` at its measured speed, are refused at
  once (429), so nothing hangs and what is admitted finishes within its deadline.
* A batch is anchored on the oldest waiting text (nothing starves) and filled with the
  texts closest to it in length (little padding), within ``max_batch_size`` and
  ``max_batch_tokens`` (batch size x longest text), as far as they make a better call:
  texts that would pad it more than they add wait for batch-mates of their own length.
* It leaves when full, or ``max_wait_ms`` after its oldest text arrived.
* In the model it may become several calls of similar lengths, where the padding saved
  pays for the extra calls, and none with more attention than ``max_call_attention``
  (:mod:`app.grouping`).
* Texts whose request is gone (client disconnected, timed out) are dropped before they
  cost compute; results are never set on a future that was cancelled.
* The model runs in worker threads, off the event loop: ``model_workers`` batches at once
  (each its own thread on the one session). A worker takes its next batch itself as soon
  as it is done with the last: the event loop only queues texts (``submit``, under the
  lock the workers take batches under) and resolves futures, so a loop busy with answers
  and new requests does not keep the model waiting between batches (docs/benchmarks.md,
  "Batches formed on the model's threads"). A batch with nothing beside it (no other batch
  in the model, no text waiting) is *lone*: it runs on every core (the engine's second
  session) and the other workers wait for it.
  A failing batch fails its own texts only; the loop keeps serving. A fault forming a batch
  sends the oldest text alone, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.config import Settings
from app.engine import Engine
from app.errors import ErrorKind, ServiceError
from app.grouping import best_call, cap_calls, padded_cost, plan_calls
from app.metrics import Metrics
from app.priority import allowed_cores, lower_this_thread, pin_this_thread, worker_cores
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
    request: int = 0  # which submit call it came in
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return len(self.encoding.ids)


class _Observers:
    """One model's batch metrics, their labels looked up once (each lookup takes a lock)."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.size = metrics.batch_size.labels(model)
        self.calls = metrics.batch_calls.labels(model)
        self.tokens = metrics.batch_tokens.labels(model)
        self.padding = metrics.batch_padding.labels(model)
        self.inference = metrics.inference_seconds.labels(model)
        self.queue = metrics.queue_seconds.labels(model)
        self.failures = metrics.batch_failures.labels(model)
        self.dropped = metrics.dropped_texts.labels(model)
        self.texts = metrics.texts.labels(model)

    def batch(
        self,
        batch: list[_Item],
        calls: int,
        padded: float,
        tokens: int,
        started: float,
        ended: float,
    ) -> None:
        self.texts.inc(len(batch))
        self.size.observe(len(batch))
        self.calls.observe(calls)
        self.tokens.observe(padded)
        self.padding.observe(1 - tokens / padded)
        self.inference.observe(ended - started)
        for item in batch:
            self.queue.observe(started - item.enqueued)


class Batcher:
    """Queue of texts and the worker threads that score them in batches."""

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
        self.workers = settings.workers
        self.model = name or engine.name  # the label of this model's metrics
        self._nice = settings.background_nice
        self._pin = settings.pin_model_threads
        # _pending, _queued_tokens, _busy and _lone change under this lock; the workers wait
        # on it for texts (submit notifies it) and for a lone batch to end.
        self._ready = threading.Condition()
        self._pending: list[_Item] = []
        self._requests = itertools.count()  # numbers each submit call's texts
        self._queued_tokens = 0  # tokens of the texts in _pending
        self._busy = 0  # batches in the model
        self._lone = False  # a lone batch has every core
        self._threads: list[threading.Thread] = []
        self._alive = 0  # worker threads running their loop
        self._loop: asyncio.AbstractEventLoop | None = None  # where futures are resolved
        self._closing = False  # no new texts
        self._stopping = False  # the workers leave
        self._recent_batch_s = 0.05  # for Retry-After estimates
        # Model seconds per padded token: the median of the last large batches' (a batch or
        # two starved by another process must not refuse requests for minutes); until one
        # has run, only the count of queued texts bounds the queue.
        self._s_per_token = 0.0
        self._speed_samples: deque[float] = deque(maxlen=_SPEED_SAMPLES)
        self._observe = _Observers(metrics, self.model)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker threads (results are delivered on the running loop)."""
        if self._threads:
            return
        self._loop = asyncio.get_running_loop()
        self._alive = self.workers
        cores = worker_cores(self.workers, self._pin, allowed_cores())
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(cores[k] if cores else None,),
                name=f"rankrm-model_{k}",
                daemon=True,
            )
            for k in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def running(self) -> bool:
        """Whether the workers are alive."""
        return self._alive == self.workers and not self._stopping

    async def stop(self, drain_s: float = 30.0) -> None:
        """Refuse new texts, score those in hand (up to ``drain_s``), then stop the workers."""
        self._closing = True
        deadline = time.monotonic() + drain_s
        while (self._pending or self._busy) and self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        while any(thread.is_alive() for thread in self._threads):  # a batch still running
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # results the workers handed over last
        self._threads = []
        with self._ready:
            left, self._pending = self._pending, []
            self._queued_tokens = 0
        for item in left:
            if not item.future.done():
                item.future.set_exception(ServiceError(ErrorKind.NOT_READY, "shutting down"))

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
        request = next(self._requests)
        items = [_Item(e, loop.create_future(), turn, request) for turn, e in enumerate(encodings)]
        with self._ready:
            self._pending.extend(items)
            self._queued_tokens += sum(item.tokens for item in items)
            self._ready.notify_all()
        return [item.future for item in items]

    # ----------------------------------------------------------------- the workers
    def _work(self, core: int | None) -> None:
        """A worker thread: take the next batch as soon as the last is done (no round trip
        through the event loop between them), score it, hand the results to the loop.

        With a ``core``, its batches run there only, beside the other worker's on theirs;
        a lone batch, which has every core, runs wherever the scheduler finds one."""
        lower_this_thread(self._nice)
        everywhere = set(allowed_cores())
        pinned = False
        try:
            while (taken := self._next_batch()) is not None:
                batch, lone = taken
                if core is not None and pinned == lone:
                    pinned = not lone
                    pin_this_thread({core} if pinned else everywhere)
                try:
                    self._score(batch, lone)
                except Exception:  # past the model (metrics): the worker must go on
                    log.exception("a batch of %d texts failed after the model", len(batch))
                    error = ServiceError(ErrorKind.INTERNAL, "internal error (see the service log)")
                    self._hand_over(self._fail, batch, error)  # those still unanswered
        finally:
            with self._ready:
                self._alive -= 1

    def _next_batch(self) -> tuple[list[_Item], bool] | None:
        """Wait for a batch (full, or ``max_wait`` after its oldest text arrived, and no lone
        batch in the model) and take it, with whether it is lone; None when stopping."""
        with self._ready:
            while not self._stopping:
                self._drop_abandoned()
                if not self._pending or self._lone:
                    self._ready.wait()
                    continue
                if len(self._pending) < self.max_batch_size:
                    remaining = self._pending[0].enqueued + self.max_wait_s - time.monotonic()
                    if remaining > 0:  # wait for batch-mates
                        self._ready.wait(remaining)
                        continue
                try:
                    batch = self._take_batch()
                except Exception:  # a fault forming it: the worker must go on
                    log.exception("forming a batch failed; the oldest text goes alone")
                    batch = self._take_oldest()
                lone = not self._busy and not self._pending  # nothing else for the cores
                self._busy += 1
                self._lone = lone
                return batch, lone
            return None

    def _score(self, batch: list[_Item], lone: bool) -> None:
        """Score one batch on this worker thread and resolve its futures on the loop."""
        started = time.monotonic()
        lengths = [item.tokens for item in batch]
        try:
            calls = plan_calls(lengths, self.split_overhead_tokens)
            calls = cap_calls(lengths, calls, self.max_call_attention)
            raw = self._run(batch, calls, lone)
        except Exception:
            log.exception("a batch of %d texts failed", len(batch))
            self._observe.failures.inc()
            error = ServiceError(ErrorKind.MODEL_ERROR, "the model failed on this batch")
            self._hand_over(self._fail, batch, error)
            return
        finally:
            with self._ready:
                self._busy -= 1
                if lone:
                    self._lone = False
                    self._ready.notify_all()
        finished = time.monotonic()
        self._hand_over(self._deliver, batch, raw, started, finished)
        self._record(batch, calls, started, finished, lone)

    def _hand_over(self, callback: Callable[..., None], *args: object) -> None:
        """Run ``callback`` on the event loop (futures are the loop's to resolve)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(callback, *args)

    @staticmethod
    def _deliver(
        batch: list[_Item],
        raw: list[tuple[float, tuple[float, ...]]],
        started: float,
        finished: float,
    ) -> None:
        for item, (value, heads) in zip(batch, raw, strict=True):
            if not item.future.done():  # cancelled while it ran: nobody to tell
                waited, ran = started - item.enqueued, finished - started
                item.future.set_result(Scored(value, waited, ran, len(batch), heads))

    @staticmethod
    def _fail(batch: list[_Item], error: ServiceError) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

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

    def _drop_abandoned(self) -> None:
        """Drop texts whose request is gone (under the lock)."""
        before = len(self._pending)
        self._pending = [item for item in self._pending if not item.future.done()]
        if len(self._pending) != before:
            self._observe.dropped.inc(before - len(self._pending))
            self._queued_tokens = sum(item.tokens for item in self._pending)

    def _take_batch(self) -> list[_Item]:
        """The text owed a place first, with its request's other texts owed a place, then
        the texts nearest in length to it, within both budgets; of those, as many as make
        the call that uses the model best (:func:`~app.grouping.best_call`) leave, and the
        rest stay queued (under the lock).

        Requests take turns: the texts owed a place are those earliest in the order of
        (place within their request, arrival), a quarter of a batch, so a small request
        that arrives behind a 512-text one is in the next batch or two, not after all 512.
        A text that has waited longer than the queue's time bound goes before any other,
        so a stream of small requests cannot starve a large one.

        Texts of other lengths than the first's wait for batch-mates of their own length
        among those that arrive meanwhile, instead of running now as small calls of a
        batch split by length: under one-text requests of mixed lengths the calls held 7 to
        10 texts instead of 6, with 4-9 % padding instead of 12 %, and the other worker
        takes the texts left at once (docs/benchmarks.md, "Only the best call leaves").
        """
        self._drop_abandoned()
        if not self._pending:
            return []
        pending = self._pending
        overdue = time.monotonic() - self.max_queue_wait_s  # waited past the queue's bound

        def order(i: int) -> tuple[bool, int, int]:
            return (pending[i].enqueued > overdue, pending[i].turn, i)

        owed = heapq.nsmallest(max(1, self.max_batch_size // 4), range(len(pending)), key=order)
        request = pending[owed[0]].request
        owed = [i for i in owed if pending[i].request == request]
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
        fitted = len(taken & set(owed))  # owed texts within the budgets: chosen's first
        lengths = [pending[i].tokens for i in chosen]
        leaving = set(chosen[: best_call(lengths, self.split_overhead_tokens, fitted)])
        batch = [pending[i] for i in sorted(leaving)]
        self._pending = [item for i, item in enumerate(pending) if i not in leaving]
        self._queued_tokens -= sum(item.tokens for item in batch)
        return batch

    def _take_oldest(self) -> list[_Item]:
        """The oldest waiting text alone: the batch of last resort (under the lock).
        ``_take_batch`` changes the queue only once its batch is formed, so a fault
        before that leaves every text in place."""
        batch, self._pending = self._pending[:1], self._pending[1:]
        self._queued_tokens -= sum(item.tokens for item in batch)
        return batch

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
        self._observe.batch(batch, len(calls), padded, sum(lengths), started, finished)
