"""Every error status, overload, timeout, engine failure, disconnects and API keys."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.app.conftest import ControlledEngine, Server, running


def check_error(response: httpx.Response, status: int, kind: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}
    assert body["error_type"] == kind
    for word in words:
        assert word in body["error"]


@pytest.mark.parametrize(
    ("path", "payload", "status", "kind", "words"),
    [
        ("/score", {"texts": []}, 400, "empty_input", ["empty"]),
        ("/compare", {"pairs": []}, 400, "empty_input", []),
        ("/rank", {"candidates": []}, 400, "empty_input", []),
        ("/score", {"texts": ["ok", ""]}, 422, "invalid_request", ["texts[1]: empty text"]),
        ("/score", {"texts": ["ok", 3]}, 422, "invalid_request", ["texts[1]"]),
        ("/score", {"texts": ["a"], "items": []}, 422, "invalid_request", ["exactly one"]),
        ("/score", {}, 422, "invalid_request", ["exactly one"]),
        ("/score", {"texts": ["a"], "typo": 1}, 422, "invalid_request", ["typo"]),
        ("/score", {"items": [{"prompt": 5, "response": "x"}]}, 422, "invalid_request",
         ["items[0].prompt"]),
        ("/score", {"items": [{"prompt": [{"role": "alien", "content": "x"}], "response": "y"}]},
         422, "invalid_request", ["items[0]", "alien"]),
        ("/compare", {"pairs": [{"a": "x"}]}, 422, "invalid_request", ["pairs[0].b"]),
        ("/get_reward", {"prompts": []}, 422, "invalid_request", ["query"]),
        ("/score", [1, 2], 422, "invalid_request", []),
        ("/score", "a string", 422, "invalid_request", []),
    ],
)  # fmt: skip
def test_bad_input_gets_a_clear_json_error(
    server: Server, path: str, payload: Any, status: int, kind: str, words: list[str]
) -> None:
    check_error(httpx.post(server.url + path, json=payload), status, kind, *words)
    assert httpx.post(f"{server.url}/score", json={"texts": ["good"]}).status_code == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"texts": [', "Expecting value at byte 11"),
        (b'{"texts": ["a\xff"]}', "not valid UTF-8: byte 0xff at byte 13"),
        (b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"texts": ["a"], "truncate": ' + b"9" * 5000 + b"}", "value has 5000 digits"),
    ],
    ids=["truncated", "invalid-utf8", "deep-nesting", "huge-integer"],
)
def test_a_body_that_does_not_parse_is_400_saying_why(
    server: Server, body: bytes, reason: str
) -> None:
    with httpx.Client() as client:  # one connection: still usable after the error
        response = client.post(
            f"{server.url}/score", content=body, headers={"content-type": "application/json"}
        )
        check_error(response, 400, "invalid_json", "not valid JSON", reason)
        assert client.post(f"{server.url}/score", json={"texts": ["good"]}).status_code == 200


@pytest.mark.parametrize(
    "text", [" \t\n", "\u200b\u200f\u2066", "\x00\x00", "\u0301\u20dd", "\u3000"]
)
def test_a_text_with_nothing_visible_is_an_empty_text(server: Server, text: str) -> None:
    check_error(
        httpx.post(f"{server.url}/score", json={"texts": ["ok", text]}),
        422,
        "invalid_request",
        "texts[1]: empty text",
    )
    # a visible character among invisible ones is text
    assert httpx.post(f"{server.url}/score", json={"texts": [text + "a"]}).status_code == 200


def test_unknown_path_and_method(server: Server) -> None:
    check_error(httpx.get(f"{server.url}/nope"), 404, "not_found")
    response = httpx.get(f"{server.url}/score")
    check_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"  # what the method should have been


def test_the_schema_states_what_empty_input_is_refused(server: Server) -> None:
    schemas = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]
    texts = schemas["ScoreRequest"]["properties"]["texts"]  # minItems: arrays only
    assert texts["minItems"] == 1 and texts["anyOf"][0]["items"]["minLength"] == 1
    assert schemas["CompareRequest"]["properties"]["pairs"]["minItems"] == 1
    assert schemas["Pair"]["properties"]["a"]["minLength"] == 1
    assert schemas["RankRequest"]["properties"]["candidates"]["minItems"] == 1


def test_limits_give_413_and_422(engine: ControlledEngine) -> None:
    with running(engine, max_items=4, max_text_chars=50, max_body_bytes=2048) as s:
        check_error(
            httpx.post(f"{s.url}/score", json={"texts": ["a"] * 5}),
            413,
            "too_large",
            "5 texts",
            "limit is 4",
        )
        check_error(
            httpx.post(f"{s.url}/score", json={"texts": ["x" * 51]}), 413, "too_large", "texts[0]"
        )
        check_error(
            httpx.post(f"{s.url}/score", json={"texts": ["y" * 3000]}), 413, "too_large", "body"
        )
        check_error(
            httpx.post(f"{s.url}/compare", json={"pairs": [{"a": "x", "b": "y"}] * 3}),
            413,
            "too_large",
            "6 texts",
        )


def test_over_long_text_is_truncated_or_refused(server: Server) -> None:
    long_text = "good " * 400
    kept = httpx.post(f"{server.url}/score", json={"texts": [long_text]}).json()
    assert kept["usage"]["truncated"] == 1
    refused = httpx.post(
        f"{server.url}/score", json={"texts": ["ok", long_text], "truncate": False}
    )
    check_error(refused, 422, "text_too_long", "texts[1]", "128 tokens")


def test_full_queue_answers_429_at_once(engine: ControlledEngine) -> None:
    engine.delay_s = 0.5
    with running(engine, max_queue=8, max_items=8, max_batch_size=4) as s:
        busy = threading.Thread(
            target=httpx.post,
            args=(f"{s.url}/score",),
            kwargs={"json": {"texts": ["good"] * 8}, "timeout": 30},
        )
        busy.start()
        assert engine.started.wait(5)
        time.sleep(0.05)  # 4 texts in the model, 4 still queued
        response = httpx.post(f"{s.url}/score", json={"texts": ["a", "b", "c", "d", "e"]})
        assert busy.is_alive(), "429 must not wait for the queue to drain"
        assert engine.running == 1  # answered while the model was still on the first batch
        check_error(response, 429, "overloaded", "queue full")
        assert int(response.headers["retry-after"]) >= 1
        busy.join()
        assert httpx.post(f"{s.url}/score", json={"texts": ["good"]}).status_code == 200


def occupy_the_model(server: Server) -> threading.Thread:
    """Send one request from a thread and return once the (slow) model is busy with it."""
    first = threading.Thread(
        target=httpx.post,
        args=(f"{server.url}/score",),
        kwargs={"json": {"texts": ["first"]}, "timeout": 30},
    )
    first.start()
    assert server.engine.started.wait(5)
    return first


def test_slow_model_answers_504_and_drops_the_texts(engine: ControlledEngine) -> None:
    engine.delay_s = 0.6
    with running(engine, request_timeout_s=0.3, max_batch_size=1) as s:
        first = occupy_the_model(s)
        response = httpx.post(f"{s.url}/score", json={"texts": ["second one"]}, timeout=30)
        check_error(response, 504, "timeout", "0.3s")
        first.join()
        time.sleep(0.7)
        seen = [ids for batch in engine.batches for ids in batch]
        second = tuple(engine.encode([None], ["second one"])[0].ids)
        assert second not in seen, "a timed-out text must not reach the model"


def test_a_failing_batch_fails_only_its_own_requests(engine: ControlledEngine) -> None:
    engine.poison = "awful"
    with running(engine, max_batch_size=1) as s:
        with ThreadPoolExecutor(4) as pool:
            texts = ["good", "awful", "bad", "love it"]
            responses = list(
                pool.map(lambda t: httpx.post(f"{s.url}/score", json={"texts": [t]}), texts)
            )
        statuses = [r.status_code for r in responses]
        assert statuses == [200, 503, 200, 200]
        check_error(responses[1], 503, "model_error", "failed")
        assert httpx.post(f"{s.url}/score", json={"texts": ["good"]}).status_code == 200
        failures = f'rankrm_batch_failures_total{{model="{engine.name}"}} 1.0'
        assert failures in httpx.get(f"{s.url}/metrics").text


@pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "asgi"])
def test_disconnected_client_costs_no_compute(
    engine: ControlledEngine, shortcut: bool, shortcut_taken: list[str]
) -> None:
    engine.delay_s = 0.5
    with running(engine, max_batch_size=1, shortcut=shortcut) as s:
        first = occupy_the_model(s)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{s.url}/score", json={"texts": ["gone away"]}, timeout=0.2)
        first.join()
        time.sleep(0.3)
        seen = [ids for batch in engine.batches for ids in batch]
        assert tuple(engine.encode([None], ["gone away"])[0].ids) not in seen
        metrics = httpx.get(f"{s.url}/metrics").text
        assert f'rankrm_dropped_texts_total{{model="{engine.name}"}} 1.0' in metrics
        assert 'rankrm_requests_total{endpoint="/score",status="499"} 1.0' in metrics
        assert 'rankrm_requests_total{endpoint="/score",status="200"} 1.0' in metrics
    assert shortcut_taken == (["/score", "/score"] if shortcut else [])


def test_api_keys(engine: ControlledEngine) -> None:
    with running(engine, api_keys="first-key-123,second-key-456") as s:
        url = f"{s.url}/score"
        check_error(httpx.post(url, json={"texts": ["a"]}), 401, "unauthorized", "missing")
        check_error(
            httpx.post(url, json={"texts": ["a"]}, headers={"x-api-key": "nope"}),
            401,
            "unauthorized",
            "wrong",
        )
        ok = httpx.post(
            url, json={"texts": ["a"]}, headers={"authorization": "Bearer second-key-456"}
        )
        assert ok.status_code == 200
        assert (
            httpx.post(
                url, json={"texts": ["a"]}, headers={"x-api-key": "first-key-123"}
            ).status_code
            == 200
        )
        check_error(httpx.get(f"{s.url}/info"), 401, "unauthorized")
        for open_path in ("/health", "/ready", "/metrics"):
            assert httpx.get(s.url + open_path).status_code == 200
        assert "first-key-123" not in httpx.get(f"{s.url}/metrics").text


def test_not_ready_answers_503(server: Server) -> None:
    state = server.app.state.service
    state.ready = False  # as while loading or shutting down
    try:
        check_error(httpx.get(f"{server.url}/ready"), 503, "not_ready")
        check_error(httpx.post(f"{server.url}/score", json={"texts": ["good"]}), 503, "not_ready")
        assert httpx.get(f"{server.url}/health").status_code == 200  # alive all the same
    finally:
        state.ready = True
    assert httpx.post(f"{server.url}/score", json={"texts": ["good"]}).status_code == 200
