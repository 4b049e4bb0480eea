"""Python clients for the service: :class:`RewardClient` and :class:`AsyncRewardClient`.

Both split inputs larger than the server's per-request limit (read once from ``/info``),
retry 429 and 503 with exponential backoff and full jitter (honouring ``Retry-After``),
and spread requests over several base URLs (round robin; a URL that refuses connections
is skipped for that attempt)::

    client = RewardClient(["http://rm-0:8000", "http://rm-1:8000"], api_key="...")
    client.score(["a text", "another"])                      # [0.71, -1.3]
    client.score(["Paris."], prompts=["Capital of France?"])
    client.compare([("prompt", "answer a", "answer b")])     # [{"p_a_better": 0.83, ...}]
    client.rank(["cand 1", "cand 2"], prompt="...")          # [(1, 2.1), (0, -0.4)]
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import httpx

RETRY_STATUS = {429, 503}
DEFAULT_MAX_ITEMS = 256


class RewardServiceError(RuntimeError):
    """The service answered with an error (after retries, for 429/503)."""

    def __init__(self, status: int, error: str, error_type: str) -> None:
        super().__init__(f"{status} {error_type}: {error}")
        self.status = status
        self.error = error
        self.error_type = error_type


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _raise_for(response: httpx.Response) -> None:
    try:
        body = response.json()
        error, kind = str(body.get("error")), str(body.get("error_type"))
    except ValueError:
        error, kind = response.text[:200], "unknown"
    raise RewardServiceError(response.status_code, error, kind)


def _result(response: httpx.Response | None) -> Any:
    """The JSON body of a final answer, or its error raised."""
    assert response is not None  # transport errors on the last attempt were raised
    if response.status_code >= 400:
        _raise_for(response)
    return response.json()


def _backoff(attempt: int, response: httpx.Response | None, base: float, cap: float) -> float:
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after is not None and retry_after.replace(".", "", 1).isdigit():
        return min(cap, float(retry_after)) * (0.5 + random.random() / 2)
    return random.uniform(0, min(cap, base * 2**attempt))  # full jitter


def _score_body(
    texts: Sequence[str], prompts: Sequence[str | None] | None, raw: bool, truncate: bool
) -> dict[str, Any]:
    if prompts is None:
        return {"texts": list(texts), "raw": raw, "truncate": truncate}
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
    items = [{"prompt": p, "response": t} for p, t in zip(prompts, texts, strict=True)]
    return {"items": items, "raw": raw, "truncate": truncate}


Prompt = str | list[dict[str, str]] | None
"""A prompt as text or chat messages (role/content), as the service takes it."""


def _group_chunks(
    groups: Sequence[tuple[Prompt, Sequence[str]]], size: int
) -> Iterator[list[tuple[Prompt, Sequence[str]]]]:
    """Whole groups, as many as fit in ``size`` completions (a larger group alone)."""
    chunk: list[tuple[Prompt, Sequence[str]]] = []
    count = 0
    for group in groups:
        if chunk and count + len(group[1]) > size:
            yield chunk
            chunk, count = [], 0
        chunk.append(group)
        count += len(group[1])
    if chunk:
        yield chunk


def _groups_body(chunk: list[tuple[Prompt, Sequence[str]]], scale: str, raw: bool) -> Any:
    groups = [{"prompt": p, "completions": list(c)} for p, c in chunk]
    return {"groups": groups, "scale": scale, "raw": raw}


def _trl_items(prompts: Sequence[Any], completions: Sequence[Any]) -> list[dict[str, Any]]:
    """TRL's reward-function inputs as /score items: conversational (lists of messages,
    the completion a list holding the assistant's message) or standard (text)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    items: list[dict[str, Any]] = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if isinstance(completion, list):
            turns = [*(prompt if isinstance(prompt, list) else []), *completion]
            if not isinstance(prompt, list) and prompt:
                turns.insert(0, {"role": "user", "content": prompt})
            items.append(
                {"messages": [{"role": t["role"], "content": t["content"]} for t in turns]}
            )
        else:
            items.append({"prompt": prompt or None, "response": completion})
    return items


class _Base:
    def __init__(
        self,
        base_urls: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        max_items: int | None = None,
        max_concurrency: int = 16,
    ) -> None:
        """``timeout`` (seconds per request), ``max_retries`` and the backoff (``base *
        2**attempt`` seconds, at most ``cap``, full jitter) apply to every request;
        ``max_concurrency`` bounds the async client's requests in flight."""
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("give at least one base URL")
        self.base_urls = [u.rstrip("/") for u in urls]
        self._next_url = itertools.cycle(range(len(self.base_urls)))
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = (backoff_base, backoff_cap)
        self._max_items = max_items

    def _url(self, path: str) -> str:
        return self.base_urls[next(self._next_url)] + path

    def _retry_delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop (the I/O-free part of
        the retry loop that both clients share)."""
        if response is not None and response.status_code not in RETRY_STATUS:
            return None
        if attempt >= self.max_retries:
            return None
        return _backoff(attempt, response, *self.backoff)

    @staticmethod
    def _limit_from(info: dict[str, Any]) -> int:
        return int(info.get("limits", {}).get("max_items", DEFAULT_MAX_ITEMS))


class RewardClient(_Base):
    """Blocking client (see the module docstring)."""

    def __init__(self, base_urls: str | Sequence[str], **options: Any) -> None:
        super().__init__(base_urls, **options)
        self._http = httpx.Client(timeout=self.timeout, headers=self.headers)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in itertools.count():
            try:
                response: httpx.Response | None = self._http.request(
                    method, self._url(path), json=body
                )
            except httpx.TransportError:
                if attempt >= self.max_retries:
                    raise
                response = None
            delay = self._retry_delay(attempt, response)
            if delay is None:
                return _result(response)
            time.sleep(delay)

    def max_items(self) -> int:
        """Texts per request the server accepts (asked once)."""
        if self._max_items is None:
            self._max_items = self._limit_from(self._request("GET", "/info"))
        return self._max_items

    def score(
        self,
        texts: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        *,
        raw: bool = False,
        truncate: bool = True,
    ) -> list[float]:
        """One reward per text (with its prompt, if given), in order."""
        out: list[float] = []
        for a, b in _chunks(len(texts), self.max_items()):
            chunk_prompts = prompts[a:b] if prompts is not None else None
            body = _score_body(texts[a:b], chunk_prompts, raw, truncate)
            out += self._request("POST", "/score", body)["rewards"]
        return out

    def compare(
        self, pairs: Sequence[tuple[str | None, str, str]], *, raw: bool = False
    ) -> list[dict[str, float]]:
        """For each (prompt, a, b): both rewards and P(a preferred to b)."""
        out: list[dict[str, float]] = []
        for a, b in _chunks(len(pairs), max(1, self.max_items() // 2)):
            body = {"pairs": [{"prompt": p, "a": x, "b": y} for p, x, y in pairs[a:b]], "raw": raw}
            out += self._request("POST", "/compare", body)["results"]
        return out

    def rank(
        self, candidates: Sequence[str], prompt: str | None = None, *, raw: bool = False
    ) -> list[tuple[int, float]]:
        """(index, reward) of each candidate, best first."""
        rewards = self.score(candidates, [prompt] * len(candidates), raw=raw)
        return sorted(enumerate(rewards), key=lambda ir: (-ir[1], ir[0]))

    def score_items(self, items: Sequence[dict[str, Any]], *, raw: bool = False) -> list[float]:
        """One reward per ``/score`` item (prompt/response, or messages), in order."""
        out: list[float] = []
        for a, b in _chunks(len(items), self.max_items()):
            out += self._request("POST", "/score", {"items": list(items[a:b]), "raw": raw})[
                "rewards"
            ]
        return out

    def groups(
        self,
        groups: Sequence[tuple[Prompt, Sequence[str]]],
        *,
        scale: str = "group",
        raw: bool = False,
    ) -> list[dict[str, Any]]:
        """For each (prompt, completions): rewards, ranks and GRPO advantages (``/groups``)."""
        out: list[dict[str, Any]] = []
        for chunk in _group_chunks(groups, self.max_items()):
            out += self._request("POST", "/groups", _groups_body(chunk, scale, raw))["groups"]
        return out


class AsyncRewardClient(_Base):
    """asyncio client; mirrors :class:`RewardClient`. Large inputs go out concurrently."""

    def __init__(self, base_urls: str | Sequence[str], **options: Any) -> None:
        super().__init__(base_urls, **options)
        self._http = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)
        self._in_flight: asyncio.Semaphore | None = None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._in_flight is None:  # made on the loop that uses it
            self._in_flight = asyncio.Semaphore(self.max_concurrency)
        async with self._in_flight:
            return await self._send(method, path, body)

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        for attempt in itertools.count():
            try:
                response: httpx.Response | None = await self._http.request(
                    method, self._url(path), json=body
                )
            except httpx.TransportError:
                if attempt >= self.max_retries:
                    raise
                response = None
            delay = self._retry_delay(attempt, response)
            if delay is None:
                return _result(response)
            await asyncio.sleep(delay)

    async def max_items(self) -> int:
        """Texts per request the server accepts (asked once)."""
        if self._max_items is None:
            self._max_items = self._limit_from(await self._request("GET", "/info"))
        return self._max_items

    async def score(
        self,
        texts: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        *,
        raw: bool = False,
        truncate: bool = True,
    ) -> list[float]:
        """One reward per text (with its prompt, if given), in order."""
        size = await self.max_items()
        bodies = [
            _score_body(texts[a:b], prompts[a:b] if prompts is not None else None, raw, truncate)
            for a, b in _chunks(len(texts), size)
        ]
        answers = await asyncio.gather(*(self._request("POST", "/score", b) for b in bodies))
        return [r for answer in answers for r in answer["rewards"]]

    async def compare(
        self, pairs: Sequence[tuple[str | None, str, str]], *, raw: bool = False
    ) -> list[dict[str, float]]:
        """For each (prompt, a, b): both rewards and P(a preferred to b)."""
        size = max(1, await self.max_items() // 2)
        bodies = [
            {"pairs": [{"prompt": p, "a": x, "b": y} for p, x, y in pairs[a:b]], "raw": raw}
            for a, b in _chunks(len(pairs), size)
        ]
        answers = await asyncio.gather(*(self._request("POST", "/compare", b) for b in bodies))
        return [r for answer in answers for r in answer["results"]]

    async def rank(
        self, candidates: Sequence[str], prompt: str | None = None, *, raw: bool = False
    ) -> list[tuple[int, float]]:
        """(index, reward) of each candidate, best first."""
        rewards = await self.score(candidates, [prompt] * len(candidates), raw=raw)
        return sorted(enumerate(rewards), key=lambda ir: (-ir[1], ir[0]))

    async def groups(
        self,
        groups: Sequence[tuple[Prompt, Sequence[str]]],
        *,
        scale: str = "group",
        raw: bool = False,
    ) -> list[dict[str, Any]]:
        """For each (prompt, completions): rewards, ranks and GRPO advantages (``/groups``)."""
        size = await self.max_items()
        bodies = [_groups_body(chunk, scale, raw) for chunk in _group_chunks(groups, size)]
        answers = await asyncio.gather(*(self._request("POST", "/groups", b) for b in bodies))
        return [g for answer in answers for g in answer["groups"]]

    async def score_items(
        self, items: Sequence[dict[str, Any]], *, raw: bool = False
    ) -> list[float]:
        """One reward per ``/score`` item (prompt/response, or messages), in order."""
        size = await self.max_items()
        bodies = [{"items": list(items[a:b]), "raw": raw} for a, b in _chunks(len(items), size)]
        answers = await asyncio.gather(*(self._request("POST", "/score", b) for b in bodies))
        return [r for answer in answers for r in answer["rewards"]]

    def as_grpo_reward_func(self, *, raw: bool = False) -> Callable[..., Awaitable[list[float]]]:
        """An async reward function for TRL's ``GRPOTrainer(reward_funcs=[...])``: called as
        TRL calls it, ``(prompts=..., completions=..., **kwargs)``, with standard (text) or
        conversational (message lists) data; returns one reward per completion. TRL runs
        async reward functions concurrently on its own event loop."""

        async def rankrm_reward(
            prompts: Sequence[Any], completions: Sequence[Any], **_: Any
        ) -> list[float]:
            return await self.score_items(_trl_items(prompts, completions), raw=raw)

        return rankrm_reward
