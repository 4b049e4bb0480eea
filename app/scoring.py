"""From validated inputs to rewards: limits, tokenisation, the batcher, the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from app.batcher import Batcher, Scored
from app.config import Settings
from app.engine import Engine
from app.errors import ErrorKind, ServiceError
from app.metrics import Metrics
from app.schemas import Prompt, Timings, Usage
from rankrm.encoding import render_messages

_INLINE_TOKENIZE = 16  # tokenise larger requests in a thread, off the event loop


@dataclass
class ServiceState:
    """What the routes share: built once by ``create_app``."""

    settings: Settings
    engine: Engine
    batcher: Batcher
    metrics: Metrics
    ready: bool = False


@dataclass
class Scores:
    """Raw rewards of one request, with its usage and timings."""

    raw: np.ndarray
    usage: Usage
    timings: Timings


def prompt_text(prompt: Prompt, where: str) -> str | None:
    """A prompt as text (chat messages rendered, see ``rankrm.encoding``)."""
    if prompt is None or isinstance(prompt, str):
        return prompt
    try:
        return render_messages(prompt)
    except ValueError as exc:
        raise ServiceError(ErrorKind.INVALID_REQUEST, f"{where}: {exc}") from exc


def check_inputs(
    settings: Settings, prompts: Sequence[str | None], responses: Sequence[str], names: list[str]
) -> None:
    """Refuse empty, too many and too long inputs, naming the first offender."""
    if not responses:
        raise ServiceError(ErrorKind.EMPTY_INPUT, "nothing to score: the input list is empty")
    if len(responses) > settings.max_items:
        raise ServiceError(
            ErrorKind.TOO_LARGE,
            f"{len(responses)} texts in one request; the limit is {settings.max_items} "
            "(split the request, or let the client do it)",
        )
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        if not response.strip():
            raise ServiceError(ErrorKind.INVALID_REQUEST, f"{names[i]}: empty text")
        for text, field in ((response, names[i]), (prompt or "", f"{names[i]} prompt")):
            if len(text) > settings.max_text_chars:
                raise ServiceError(
                    ErrorKind.TOO_LARGE,
                    f"{field}: {len(text)} characters; the limit is {settings.max_text_chars}",
                )


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a cancelled gather's outcome as seen (asyncio logs unseen ones as errors)."""
    if not future.cancelled():
        future.exception()


async def score(
    state: ServiceState,
    request: Request,
    prompts: Sequence[str | None],
    responses: Sequence[str],
    names: list[str],
    truncate: bool,
) -> Scores:
    """Score inputs through the batcher within the request deadline."""
    started = time.monotonic()
    check_inputs(state.settings, prompts, responses, names)
    if len(responses) <= _INLINE_TOKENIZE:
        encodings = state.engine.encode(prompts, responses)
    else:
        encodings = await asyncio.to_thread(state.engine.encode, prompts, responses)
    tokenized = time.monotonic()
    state.metrics.tokenize_seconds.observe(tokenized - started)
    truncated = [i for i, enc in enumerate(encodings) if enc.overflowing]
    if truncated and not truncate:
        i = truncated[0]
        raise ServiceError(
            ErrorKind.TEXT_TOO_LONG,
            f"{names[i]}: longer than the model's {state.engine.max_length} tokens "
            f"({len(truncated)} input(s) too long); shorten it or set truncate=true",
        )
    futures = state.batcher.submit(encodings)
    gathered: asyncio.Future[list[Scored]] = asyncio.gather(*futures)
    watcher: asyncio.Future[None] = asyncio.ensure_future(_disconnected(request))
    racing: set[asyncio.Future[Any]] = {gathered, watcher}
    try:
        done, _ = await asyncio.wait(
            racing,
            timeout=state.settings.request_timeout_s - (tokenized - started),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        watcher.cancel()
    if gathered not in done:
        gathered.cancel()  # drops our texts from the queue before they cost compute
        gathered.add_done_callback(_retrieve)
        if watcher in done:
            raise ServiceError(ErrorKind.CLIENT_CLOSED, "the client disconnected")
        raise ServiceError(
            ErrorKind.TIMEOUT,
            f"not scored within {state.settings.request_timeout_s:g}s; the service is busy",
        )
    results: list[Scored] = gathered.result()
    state.metrics.texts.inc(len(results))
    timings = Timings(
        tokenize_ms=1000 * (tokenized - started),
        queue_ms=1000 * max(r.queue_s for r in results),
        inference_ms=1000 * max(r.inference_s for r in results),
        total_ms=1000 * (time.monotonic() - started),
    )
    usage = Usage(
        texts=len(results), tokens=sum(len(e.ids) for e in encodings), truncated=len(truncated)
    )
    raw = np.array([r.raw for r in results], dtype=np.float32)
    return Scores(raw, usage, timings)


def rewards(state: ServiceState, raw: np.ndarray, want_raw: bool) -> list[float]:
    """Rewards as the client asked: normalised unless ``raw``."""
    values = raw if want_raw else state.engine.normalize(raw)
    return [float(v) for v in values]
