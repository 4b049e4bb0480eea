"""The fast lane answers what FastAPI answers: every case below is sent to a service with
the lane and to one without it, and the two must agree on status, headers that matter and
body (timings aside); a spy on FastAPI's response serialisation shows the lane was taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import routing

from app import fastlane, routes
from app.schemas import GetRewardRequest, GroupsRequest, ScoreRequest
from tests.app.conftest import ControlledEngine, running

KEY = "secret-key-1"
AUTH = {"authorization": f"Bearer {KEY}"}

# (path, body, headers): well-formed requests, and requests FastAPI must refuse
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("/score", b'{"texts": ["good", "the movie was bad"]}', AUTH),
    ("/score", b'{"texts": ["good"], "raw": true, "truncate": false}', AUTH),
    (
        "/score",
        json.dumps(
            {
                "items": [
                    {"prompt": "q", "response": "a"},
                    {
                        "messages": [
                            {"role": "user", "content": "q"},
                            {"role": "assistant", "content": "a"},
                        ]
                    },
                    {"prompt": [{"from": "human", "value": "q"}], "response": "caf\u00e9 \u2603"},
                ],
                "return_heads": True,
            }
        ).encode(),
        AUTH,
    ),
    ("/score", b'{"texts": ["good"], "model": "nope"}', AUTH),  # 422 from the route
    ("/score", json.dumps({"texts": ["word " * 300], "truncate": False}).encode(), AUTH),
    ("/score", b'{"texts": ["   "]}', AUTH),  # 422 blank, raised while scoring
    ("/score", b'{"items": [{"messages": [{"role": "user", "content": "q"}]}]}', AUTH),
    ("/score", b'{"texts": []}', AUTH),  # 400 empty_input, raised while scoring
    ("/score", b'{"texts": ["good"], "bogus": 1}', AUTH),
    ("/score", b'{"texts": ["\\ud800"]}', AUTH),
    ("/score", b'{"texts": ["good"]', AUTH),
    ("/score", b"\xff\xfe{}", AUTH),
    ("/score", b"", AUTH),
    ("/score", b'{"texts": "good"}', AUTH),
    ("/score", b'{"texts": ["good"], "weights": {"model": true}}', AUTH),
    ("/score", b'{"texts": [NaN]}', AUTH),
    ("/compare", b'{"pairs": [{"prompt": "q", "a": "good", "b": "bad"}]}', AUTH),
    (
        "/rank",
        b'{"prompt": "q", "candidates": ["a", "b", "c"], "top_k": 2, "return_texts": true}',
        AUTH,
    ),
    (
        "/groups",
        b'{"groups": [{"prompt": "q", "completions": ["a", "b"]}], "scale": "none"}',
        AUTH,
    ),
    ("/groups", b'{"groups": [{"prompt": "q", "completions": ["a", "b"]}]}', {}),  # 401
    (
        "/groups",
        b'{"groups": [{"prompt": "q", "completions": ["a"]}]}',
        {"x-api-key": "wrong-key-12"},
    ),
    (
        "/get_reward",
        b'{"query": ["q a", "<|im_start|>user\\nq<|im_end|>\\n<|im_start|>'
        b'assistant\\na<|im_end|>"], "prompts": ["q"], "labels": ["x"]}',
        AUTH,
    ),
    ("/get_reward", b'{"query": []}', AUTH),
    ("/get_reward", b'{"query": [1]}', AUTH),
]


def answers(engine: ControlledEngine, **settings: Any) -> list[tuple[Any, ...]]:
    """Each case's status, content type, Retry-After, header names and body (no timings)."""
    with running(engine, api_keys=[KEY], **settings) as server, httpx.Client(timeout=30) as c:
        seen = []
        for path, content, headers in CASES:
            response = c.post(server.url + path, content=content, headers=headers)
            body = response.json()
            if isinstance(body, dict):
                body.pop("timings", None)
            seen.append(
                (
                    response.status_code,
                    response.headers["content-type"],
                    response.headers.get("retry-after"),
                    sorted(response.headers.keys()),
                    body,
                )
            )
        return seen


@pytest.fixture
def serialisations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths whose answer FastAPI serialised (its route handler ran)."""
    calls: list[str] = []
    original = routing.serialize_response

    async def spy(**kwargs: Any) -> Any:
        calls.append(type(kwargs["response_content"]).__name__)
        return await original(**kwargs)

    monkeypatch.setattr(routing, "serialize_response", spy)
    yield calls


def well_formed(path: str, content: bytes, headers: dict[str, str]) -> bool:
    """Whether a case parses as its route's request model and carries the key."""
    try:
        fastlane.lanes(routes.router.routes)[path].body.model_validate(json.loads(content))
    except ValueError:  # not JSON, or not valid (pydantic's ValidationError is one)
        return False
    return headers == AUTH


def test_same_answers_through_the_shortcut_the_lane_and_fastapi(
    engine: ControlledEngine,
    monkeypatch: pytest.MonkeyPatch,
    serialisations: list[str],
    shortcut_taken: list[str],
) -> None:
    short = answers(engine)
    expected = [path for path, content, headers in CASES if well_formed(path, content, headers)]
    assert shortcut_taken == expected  # every well-formed request, and nothing else
    assert serialisations == []  # FastAPI's route handler ran for none of them
    fast = answers(engine, shortcut=False)
    assert shortcut_taken == expected and serialisations == []  # the lane answered them
    monkeypatch.setattr(fastlane, "lanes", lambda routes: {})
    slow = answers(engine, shortcut=False)
    assert len(serialisations) == sum(1 for status, *_ in slow if status == 200)
    for case, one, two, three in zip(CASES, short, fast, slow, strict=True):
        assert one == two == three, case[:2]
    statuses = [status for status, *_ in short]
    assert statuses.count(200) >= 8 and {400, 401, 422} <= set(statuses)


def test_lanes_are_the_scoring_routes_with_their_models() -> None:
    found = fastlane.lanes(routes.router.routes)
    assert set(found) == {"/score", "/compare", "/rank", "/groups", "/get_reward"}
    assert found["/score"].body is ScoreRequest and found["/score"].exclude_none
    assert found["/groups"].body is GroupsRequest and not found["/groups"].exclude_none
    assert found["/get_reward"].body is GetRewardRequest and found["/get_reward"].exclude_none
    assert found["/score"].endpoint is routes.score_texts


def test_an_unexpected_failure_is_a_json_500_and_the_service_goes_on(
    engine: ControlledEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failing = fastlane.Lane(ScoreRequest, _broken, exclude_none=True)
    monkeypatch.setattr(fastlane, "lanes", lambda routes: {"/score": failing})
    with running(engine) as server, httpx.Client(timeout=30) as client:
        broken = client.post(f"{server.url}/score", json={"texts": ["good"]})
        fine = client.post(f"{server.url}/rank", json={"candidates": ["a", "b"]})
    assert broken.status_code == 500
    assert broken.json() == {
        "error": "internal error (see the service log)",
        "error_type": "internal",
    }
    assert "boom" not in broken.text
    assert fine.status_code == 200
    assert "unexpected error on /score" in caplog.text


async def _broken(body: Any, request: Any, state: Any) -> Any:
    raise RuntimeError("boom")
