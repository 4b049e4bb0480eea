"""From validated inputs to rewards: limits, tokenisation, the batcher, the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Request

from app.batcher import Scored
from app.config import Settings
from app.engine import Engine, InputError, PromptInput
from app.errors import ErrorKind, ServiceError
from app.schemas import ModelChoice, Prompt, Timings, Usage
from app.state import Served, ServiceState
from rankrm.chat import ChatTemplateError
from rankrm.encoding import Tokens, is_blank, normalise_message

_INLINE_CHARS = 2048  # tokenised on the event loop up to this many characters (< 1 ms)
_SLICE_CHARS = 256 * 1024  # larger requests: in a thread, a slice of about this many at a time


@dataclass
class Scores:
    """Raw rewards of one request, with its usage and timings."""

    raw: np.ndarray
    usage: Usage
    timings: Timings
    normalized: np.ndarray | None = None  # the rewards as the model's normalisation gives them
    tokens: list[int] = field(default_factory=list)  # per input, as the model read it
    truncated: list[bool] = field(default_factory=list)  # per input
    heads: list[tuple[float, ...]] = field(default_factory=list)  # per input (head_names)
    head_names: list[str] = field(default_factory=list)  # the scoring model's outputs


def chat_turns(messages: Sequence[Mapping[str, str]], where: str) -> list[dict[str, str]]:
    """Chat messages as ``{"role", "content"}`` turns with standard role names
    (``rankrm.encoding.normalise_message``); 422 naming the message."""
    turns = []
    for i, message in enumerate(messages):
        try:
            turns.append(normalise_message(message))
        except ValueError as exc:
            raise ServiceError(ErrorKind.INVALID_REQUEST, f"{where}[{i}]: {exc}") from exc
    return turns


def prompt_input(prompt: Prompt, where: str) -> PromptInput:
    """A prompt as the engine takes it: text, or chat turns (rendered by the model's chat
    template when it has one, else as ``role: content`` text; see ``rankrm.encoding``)."""
    if prompt is None or isinstance(prompt, str):
        return prompt
    return chat_turns(prompt, where)


def conversation_input(
    messages: Sequence[Mapping[str, str]], where: str
) -> tuple[PromptInput, str]:
    """A whole conversation as (prompt turns, answer): it must end with the answer scored."""
    turns = chat_turns(messages, where)
    if not turns or turns[-1]["role"] != "assistant":
        raise ServiceError(
            ErrorKind.INVALID_REQUEST,
            f"{where}: a conversation to score must end with the assistant's answer",
        )
    return turns[:-1] or None, turns[-1]["content"]


def _chars(prompt: PromptInput) -> int:
    if isinstance(prompt, list):
        return sum(len(turn["content"]) for turn in prompt)
    return len(prompt or "")


def check_inputs(
    settings: Settings, prompts: Sequence[PromptInput], responses: Sequence[str], names: list[str]
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
        if is_blank(response):
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                f"{names[i]}: empty text (nothing but whitespace or invisible characters)",
            )
        for size, name in ((len(response), names[i]), (_chars(prompt), f"{names[i]} prompt")):
            if size > settings.max_text_chars:
                raise ServiceError(
                    ErrorKind.TOO_LARGE,
                    f"{name}: {size} characters; the limit is {settings.max_text_chars}",
                )


def slices(sizes: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` ranges whose sizes add up to about ``budget`` at most
    (a single larger item is a slice of its own)."""
    ranges: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > budget:
            ranges.append((start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


async def tokenize(
    state: ServiceState,
    prompts: Sequence[PromptInput],
    responses: Sequence[str],
    names: Sequence[str],
    use: Served | None = None,
) -> list[Tokens]:
    """Token ids of each input. Small requests are tokenised inline; larger ones in a
    thread, one slice at a time across the whole service, so nothing proportional to input
    size runs on the event loop and the tokenizer's transient memory stays bounded."""
    use = use or state.model(None)
    sizes = [len(r) + _chars(p) for p, r in zip(prompts, responses, strict=True)]
    total = sum(sizes)
    if total <= _INLINE_CHARS:
        return _encode(use.engine, prompts, responses, names, parallel=False)
    wait_s = (state.tokenizer_backlog_chars + total) * state.s_per_char
    wait_s += use.batcher.expected_wait_s()
    limit = state.settings.queue_wait_limit_s
    if wait_s > limit:
        raise ServiceError(
            ErrorKind.OVERLOADED,
            f"queue full (about {wait_s:.1f}s of tokenisation and model work waiting, "
            f"limit {limit:g}s); retry later",
            retry_after=wait_s - limit,
        )
    tokens: list[Tokens] = []
    state.tokenizer_backlog_chars += total
    try:
        for start, end in slices(sizes, _SLICE_CHARS):
            async with state.tokenizing:
                part, seconds = await asyncio.get_running_loop().run_in_executor(
                    state.tokenizer_thread,
                    _timed_encode,
                    use.engine,
                    prompts[start:end],
                    responses[start:end],
                    names[start:end],
                )
            tokens += part
            chars = sum(sizes[start:end])
            state.s_per_char = 0.8 * state.s_per_char + 0.2 * seconds / chars
            state.tokenizer_backlog_chars -= chars
            total -= chars
    finally:
        state.tokenizer_backlog_chars -= total
    return tokens


def _encode(
    engine: Engine,
    prompts: Sequence[PromptInput],
    responses: Sequence[str],
    names: Sequence[str],
    *,
    parallel: bool = True,
) -> list[Tokens]:
    """The engine's tokens, with the input a chat template refused named (422)."""
    try:
        return engine.encode(prompts, responses, parallel=parallel)
    except InputError as exc:
        raise ServiceError(ErrorKind.INVALID_REQUEST, f"{names[exc.index]}: {exc}") from exc
    except ChatTemplateError as exc:
        raise ServiceError(ErrorKind.INVALID_REQUEST, f"{names[0]}...: {exc}") from exc


def _timed_encode(
    engine: Engine, prompts: Sequence[PromptInput], responses: Sequence[str], names: Sequence[str]
) -> tuple[list[Tokens], float]:
    """Encode in the worker thread and time it there: timed from the event loop, the wait
    for the loop to notice would count as tokenisation under load."""
    started = time.perf_counter()
    tokens = _encode(engine, prompts, responses, names)
    return tokens, time.perf_counter() - started


DISCONNECTED = "rankrm.disconnected"
"""The ASGI scope extension (``scope["extensions"]``) through which a server that knows when
its client leaves (``app.connection``'s shortcut) hands a future done then: no task needs to
watch ``receive`` for the disconnect."""


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _departure(request: Request) -> tuple[asyncio.Future[Any], asyncio.Task[None] | None]:
    """A future done when the client leaves: the server's (:data:`DISCONNECTED`), else a
    task watching ``receive`` (returned second, to be cancelled when no longer needed)."""
    given = request.scope.get("extensions", {}).get(DISCONNECTED)
    if given is not None:
        return given, None
    watcher = asyncio.ensure_future(_disconnected(request))
    return watcher, watcher


async def collect(
    futures: list[asyncio.Future[Scored]], request: Request, timeout_s: float
) -> list[Scored]:
    """The texts' results, in order. The first failure is raised as soon as it comes;
    CLIENT_CLOSED when the client leaves first, ``TimeoutError`` after ``timeout_s``. Whatever the
    end, texts still queued are dropped before they cost compute (their futures cancelled).

    One future and one timer per request, woken by callbacks: this runs for every request,
    and a gather, a wait and a watcher task cost the event loop several times as much."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    left = len(futures)

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    def scored(future: asyncio.Future[Scored]) -> None:
        nonlocal left
        left -= 1
        if left == 0 or future.cancelled() or future.exception() is not None:
            wake()

    for future in futures:
        future.add_done_callback(scored)
    gone, watcher = _departure(request)
    gone.add_done_callback(wake)
    timer = loop.call_later(timeout_s, wake)
    try:
        await woken
    finally:
        timer.cancel()
        gone.remove_done_callback(wake)
        if watcher is not None:
            watcher.cancel()
        unfinished = [future for future in futures if not future.done()]
        for future in unfinished:
            future.cancel()  # the batcher skips cancelled texts
    failures = [f.exception() for f in futures if f.done() and not f.cancelled()]  # all seen
    failure = next((exc for exc in failures if exc is not None), None)
    if failure is not None:
        raise failure
    if unfinished:
        if gone.done():
            raise ServiceError(ErrorKind.CLIENT_CLOSED, "the client disconnected")
        raise TimeoutError
    return [future.result() for future in futures]


async def score(
    state: ServiceState,
    request: Request,
    prompts: Sequence[PromptInput],
    responses: Sequence[str],
    names: list[str],
    truncate: bool,
    use: Served | None = None,
) -> Scores:
    """Score inputs through a model's batcher (``use``; default: the default model) within
    the request deadline."""
    use = use or state.model(None)
    started = time.monotonic()
    check_inputs(state.settings, prompts, responses, names)
    refused = use.batcher.refusal(len(responses))  # texts that cannot fit: before tokenising
    if refused is not None:
        raise refused
    encodings = await tokenize(state, prompts, responses, names, use)
    tokenized = time.monotonic()
    state.metrics.tokenize_seconds.observe(tokenized - started)
    truncated = [i for i, enc in enumerate(encodings) if enc.truncated]
    if truncated and not truncate:
        i = truncated[0]
        raise ServiceError(
            ErrorKind.TEXT_TOO_LONG,
            f"{names[i]}: longer than the model's {use.engine.max_length} tokens "
            f"({len(truncated)} input(s) too long); shorten it or set truncate=true",
        )
    futures = use.batcher.submit(encodings)
    try:
        results = await collect(
            futures, request, state.settings.request_timeout_s - (tokenized - started)
        )
    except TimeoutError:
        raise ServiceError(
            ErrorKind.TIMEOUT,
            f"not scored within {state.settings.request_timeout_s:g}s; the service is busy",
        ) from None
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
    return Scores(
        raw,
        usage,
        timings,
        normalized=use.engine.normalize(raw),
        tokens=[len(e.ids) for e in encodings],
        truncated=[e.truncated for e in encodings],
        heads=[r.heads for r in results],
        head_names=list(use.engine.heads),
    )


async def score_with(
    state: ServiceState,
    request: Request,
    prompts: Sequence[PromptInput],
    responses: Sequence[str],
    names: list[str],
    truncate: bool,
    choice: ModelChoice,
) -> Scores:
    """Score with the model the request names, or the weighted sum of several models'
    normalised rewards (each model's normalisation applied before weighting), scored side
    by side. Without either, the configured weights (``RANKRM_WEIGHTS``), else the default
    model."""
    weights = choice.weights if choice.weights is not None else state.settings.weight_map
    if choice.model is not None and choice.weights is not None:
        raise ServiceError(ErrorKind.INVALID_REQUEST, "give 'model' or 'weights', not both")
    if not weights or choice.model is not None:
        return await score(state, request, prompts, responses, names, truncate,
                           state.model(choice.model))  # fmt: skip
    if choice.raw:
        raise ServiceError(
            ErrorKind.INVALID_REQUEST,
            "raw rewards of a weighted sum are not defined: drop 'raw' or name one 'model'",
        )
    used = [state.model(name, f"weights.{name}") for name in weights]
    parts = await asyncio.gather(
        *(score(state, request, prompts, responses, names, truncate, u) for u in used)
    )
    combined = sum(
        weights[u.name] * np.asarray(p.normalized, dtype=np.float64)
        for u, p in zip(used, parts, strict=True)
    )
    combined = np.asarray(combined, dtype=np.float32)
    first = parts[0]
    usage = Usage(
        texts=first.usage.texts,
        tokens=sum(p.usage.tokens for p in parts),
        truncated=first.usage.truncated,
    )
    return Scores(
        combined,
        usage,
        max((p.timings for p in parts), key=lambda t: t.total_ms),
        normalized=combined,
        tokens=first.tokens,
        truncated=[any(t) for t in zip(*(p.truncated for p in parts), strict=True)],
        heads=first.heads,
        head_names=first.head_names,
    )


async def score_in_slices(
    state: ServiceState,
    request: Request,
    prompts: Sequence[PromptInput],
    responses: Sequence[str],
    names: list[str],
    limit: int,
    choice: ModelChoice,
) -> Scores:
    """Score up to ``limit`` inputs ``max_items`` at a time, one slice after another: a
    request of thousands holds one slice's texts in the queue, not all of them."""
    if len(responses) > limit:
        raise ServiceError(
            ErrorKind.TOO_LARGE,
            f"{len(responses)} inputs in one request; the limit is {limit} (split the request)",
        )
    step = state.settings.max_items
    parts = []
    for start in range(0, len(responses), step):
        end = start + step
        parts.append(
            await score_with(state, request, prompts[start:end], responses[start:end],
                             names[start:end], True, choice)
        )  # fmt: skip
    if len(parts) == 1:
        return parts[0]
    usage = Usage(
        texts=sum(p.usage.texts for p in parts),
        tokens=sum(p.usage.tokens for p in parts),
        truncated=sum(p.usage.truncated for p in parts),
    )
    timings = Timings(
        tokenize_ms=sum(p.timings.tokenize_ms for p in parts),
        queue_ms=max(p.timings.queue_ms for p in parts),
        inference_ms=sum(p.timings.inference_ms for p in parts),
        total_ms=sum(p.timings.total_ms for p in parts),
    )
    return Scores(
        np.concatenate([p.raw for p in parts]),
        usage,
        timings,
        normalized=np.concatenate([p.normalized for p in parts if p.normalized is not None]),
        tokens=[n for p in parts for n in p.tokens],
        truncated=[t for p in parts for t in p.truncated],
        heads=[h for p in parts for h in p.heads],
        head_names=parts[0].head_names,
    )


def model_label(state: ServiceState, choice: ModelChoice) -> str:
    """The name answers carry: the model used, or the weighted sum of several."""
    weights = choice.weights if choice.weights is not None else state.settings.weight_map
    if choice.model is None and weights:
        return " + ".join(f"{w:g} * {name}" for name, w in weights.items())
    return state.model(choice.model).engine.name


def head_outputs(scores: Scores) -> list[dict[str, float]] | None:
    """Each input's multi-output head, by output name (raw, as the model that scored them
    gives them); None for a one-output model."""
    if not scores.head_names:
        return None
    return [dict(zip(scores.head_names, values, strict=True)) for values in scores.heads]


def rewards(scores: Scores, want_raw: bool) -> list[float]:
    """Rewards as the client asked: normalised unless ``raw``."""
    values = scores.raw if want_raw or scores.normalized is None else scores.normalized
    return [float(v) for v in values]
