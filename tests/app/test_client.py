"""The clients: against a real server, and with a mock transport for retries and spreading."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest

from rankrm import client as client_module
from rankrm.client import AsyncRewardClient, RewardClient, RewardServiceError
from tests.app.conftest import ControlledEngine, running

TEXTS = [f"good film number {i}" if i % 2 else f"bad plot {i}" for i in range(11)]


def test_sync_client_splits_over_the_server_limit(engine: ControlledEngine) -> None:
    with running(engine, max_items=4) as s, RewardClient(s.url) as client:
        rewards = client.score(TEXTS)
        whole = [client.score([t])[0] for t in TEXTS]
        assert rewards == pytest.approx(whole, abs=1e-5)
        assert client.max_items() == 4
        pairs = [("q", "good", "bad"), (None, "awful", "love it"), ("q", "a", "b")]
        compared = client.compare(pairs)
        assert len(compared) == 3 and all(0 < c["p_a_better"] < 1 for c in compared)
        ranked = client.rank(TEXTS, prompt="review")
        assert sorted(i for i, _ in ranked) == list(range(len(TEXTS)))
        assert [r for _, r in ranked] == sorted((r for _, r in ranked), reverse=True)
        by_index = dict(ranked)
        with_prompt = client.score(TEXTS[:2], prompts=["review", "review"])
        assert with_prompt == pytest.approx([by_index[0], by_index[1]], abs=1e-5)


def test_async_client_matches_the_sync_one(engine: ControlledEngine) -> None:
    with running(engine, max_items=4) as s:
        with RewardClient(s.url) as sync:
            expected = sync.score(TEXTS)

        async def go() -> list[float]:
            async with AsyncRewardClient(s.url) as client:
                return await client.score(TEXTS)

        assert asyncio.run(go()) == pytest.approx(expected, abs=1e-6)


def test_client_raises_service_errors(engine: ControlledEngine) -> None:
    with running(engine, api_keys="the-right-key") as s:
        with RewardClient(s.url, max_items=8) as client, pytest.raises(RewardServiceError) as info:
            client.score(["good"])
        assert info.value.status == 401 and info.value.error_type == "unauthorized"
        with RewardClient(s.url, api_key="the-right-key") as client:
            assert len(client.score(["good"])) == 1


def fake_server(fail_first: int, status: int = 429) -> tuple[httpx.MockTransport, Counter[str]]:
    """Answers ``status`` to the first ``fail_first`` scoring calls, then rewards."""
    calls: Counter[str] = Counter()

    def handle(request: httpx.Request) -> httpx.Response:
        calls[request.url.host] += 1
        if request.url.path == "/info":
            return httpx.Response(200, json={"limits": {"max_items": 3}})
        calls["score"] += 1
        if calls["score"] <= fail_first:
            return httpx.Response(
                status,
                headers={"retry-after": "0"},
                json={"error": "busy", "error_type": "overloaded"},
            )
        texts = json.loads(request.content)["texts"]
        return httpx.Response(200, json={"rewards": [float(len(t)) for t in texts]})

    return httpx.MockTransport(handle), calls


def test_retries_429_and_503_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("rankrm.client.time.sleep", sleeps.append)
    transport, calls = fake_server(fail_first=3, status=503)
    client = RewardClient("http://rm:8000")
    client._http = httpx.Client(transport=transport)
    assert client.score(["ab", "abc"]) == [2.0, 3.0]
    assert calls["score"] == 4 and len(sleeps) == 3


def test_gives_up_after_max_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rankrm.client.time.sleep", lambda _: None)
    transport, _ = fake_server(fail_first=100)
    client = RewardClient("http://rm:8000", max_retries=2)
    client._http = httpx.Client(transport=transport)
    with pytest.raises(RewardServiceError) as info:
        client.score(["x"])
    assert info.value.status == 429


def test_spreads_requests_over_base_urls() -> None:
    transport, calls = fake_server(fail_first=0)
    client = RewardClient(["http://rm-a:8000", "http://rm-b:8000/"])
    client._http = httpx.Client(transport=transport)
    assert client.score([f"t{i}" for i in range(12)]) == [2.0] * 10 + [3.0] * 2
    assert calls["rm-a"] >= 2 and calls["rm-b"] >= 2  # 1 info + 4 score calls, round robin


def test_backoff_uses_full_jitter_and_retry_after() -> None:
    assert all(0 <= client_module._backoff(3, None, 0.1, 5.0) <= 0.8 for _ in range(100))
    response = httpx.Response(429, headers={"retry-after": "2"})
    assert all(1.0 <= client_module._backoff(0, response, 0.1, 5.0) <= 2.0 for _ in range(100))


def test_the_async_client_keeps_at_most_max_concurrency_requests_in_flight(
    engine: ControlledEngine,
) -> None:
    engine.delay_s = 0.05
    with running(engine, max_items=2) as s:
        in_flight = peak = 0

        async def go() -> list[float]:
            nonlocal in_flight, peak
            async with AsyncRewardClient(s.url, max_concurrency=2) as client:
                send = client._send

                async def counted(*args: Any) -> Any:
                    nonlocal in_flight, peak
                    in_flight += 1
                    peak = max(peak, in_flight)
                    try:
                        return await send(*args)
                    finally:
                        in_flight -= 1

                client._send = counted  # type: ignore[method-assign, assignment]
                return await client.score(TEXTS * 3)

        assert len(asyncio.run(go())) == len(TEXTS) * 3
        assert peak == 2
