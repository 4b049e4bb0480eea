"""The hardening contract: invalid Unicode refused with its field, admission before the
body is read, the in-flight body budget, the queue bounded by model time, and tokenisation
that is sliced and off the event loop. Real servers on loopback, raw sockets where the
point is what happens before a body arrives."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import pytest

from app.batcher import Batcher
from app.config import Settings
from app.fastlane import lanes
from app.intake import SCORING_PATHS
from app.metrics import Metrics
from app.routes import router
from tests.app.conftest import ControlledEngine, Server, running
from tests.app.test_errors import check_error

# (endpoint, body with a lone surrogate, the field the error must name)
SURROGATES: list[tuple[str, dict[str, Any], str]] = [
    ("/score", {"texts": ["good", "\ud800"]}, "texts[1]"),
    ("/score", {"texts": ["x\ud83dy"]}, "texts[0]"),
    ("/score", {"texts": ["\udfff"]}, "texts[0]"),
    ("/score", {"items": [{"prompt": "q\udc00", "response": "ok"}]}, "items[0].prompt"),
    ("/score", {"items": [{"response": "\ud800"}]}, "items[0].response"),
    (
        "/score",
        {"items": [{"prompt": [{"role": "user", "content": "\ud800"}], "response": "ok"}]},
        "items[0].prompt",
    ),
    (
        "/score",
        {"items": [{"prompt": [{"role": "us\ud800er", "content": "x"}], "response": "ok"}]},
        "items[0].prompt",
    ),
    ("/compare", {"pairs": [{"a": "good", "b": "\ud800"}]}, "pairs[0].b"),
    ("/compare", {"pairs": [{"prompt": "\ud800", "a": "good", "b": "bad"}]}, "pairs[0].prompt"),
    ("/rank", {"prompt": "\udbff", "candidates": ["a", "b"]}, "prompt"),
    ("/rank", {"candidates": ["a", "b\ud800"]}, "candidates[1]"),
    ("/get_reward", {"query": ["fine", "\ud800"]}, "query[1]"),
    ("/get_reward", {"query": ["fine"], "prompts": ["\ud800"]}, "prompts[0]"),
    ("/get_reward", {"query": ["fine"], "labels": [{"k": ["\ud800"]}]}, "labels[0].k[0]"),
]


@pytest.mark.parametrize(("path", "payload", "field"), SURROGATES)
def test_lone_surrogates_are_422_naming_the_field(
    server: Server, path: str, payload: dict[str, Any], field: str
) -> None:
    # httpx would refuse to encode a lone surrogate: send the JSON escape as bytes.
    import json

    content = json.dumps(payload).encode("ascii")  # ensure_ascii keeps "\ud800" as an escape
    response = httpx.post(server.url + path, content=content)
    check_error(response, 422, "invalid_request", field, "not valid Unicode", "lone surrogate")
    assert httpx.post(f"{server.url}/score", json={"texts": ["good"]}).status_code == 200


def test_control_characters_and_paired_surrogates_are_valid_text(server: Server) -> None:
    content = b'{"texts": ["\\u0000x", "a\\u0000b\\u001f", "\\ud83d\\ude00 good"]}'
    response = httpx.post(f"{server.url}/score", content=content)
    assert response.status_code == 200, response.text
    assert len(response.json()["rewards"]) == 3
    # with nothing visible beside them, they are an empty text (tests/app/test_errors.py)
    response = httpx.post(f"{server.url}/score", content=b'{"texts": ["\\u0000"]}')
    assert response.status_code == 422


def test_an_error_quoting_what_was_sent_is_still_json(server: Server) -> None:
    response = httpx.post(f"{server.url}/score", content=b'{"texts": ["a"], "\\udfff": 1}')
    assert response.status_code == 422
    assert response.json()["error_type"] == "invalid_request"


def raw_exchange(url: str, head: bytes, body: bytes = b"", wait_s: float = 5.0) -> bytes:
    """Send ``head`` (and ``body``) on a fresh socket; return what comes back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_wrong_key_and_oversized_body_refused_before_the_body_is_sent(
    engine: ControlledEngine,
) -> None:
    with running(engine, api_keys="first-key-123", max_body_bytes=4096) as s:
        head = b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\n\r\n"
        tick = time.monotonic()
        answer = raw_exchange(s.url, head)  # no body at all: only the headers arrive
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert time.monotonic() - tick < 2
        big = (
            b"POST /score HTTP/1.1\r\nHost: t\r\nX-API-Key: first-key-123\r\n"
            b"Content-Length: 9000000\r\n\r\n"
        )
        answer = raw_exchange(s.url, big)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert b"connection: close" in answer.lower()


def test_chunked_body_over_the_limit_is_413(engine: ControlledEngine) -> None:
    with running(engine, max_body_bytes=2048) as s:

        def chunks() -> Any:
            for _ in range(10):
                yield b'{"texts": ["' + b"a" * 500

        response = httpx.post(f"{s.url}/score", content=chunks())
        check_error(response, 413, "too_large", "2048-byte limit")
        assert response.headers["connection"] == "close"
        assert httpx.post(f"{s.url}/score", json={"texts": ["good"]}).status_code == 200


def test_in_flight_budget_refuses_at_once_and_frees_on_completion(
    engine: ControlledEngine,
) -> None:
    with running(engine, max_body_bytes=2048, max_inflight_bytes=3000) as s:
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as slow:
            # A client holding 2,000 bytes of an unfinished body in the budget.
            slow.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 2040\r\n\r\n")
            slow.sendall(b'{"texts": ["' + b"a" * 1988)
            time.sleep(0.3)
            tick = time.monotonic()
            refused = httpx.post(f"{s.url}/score", json={"texts": ["b" * 1500]})
            assert time.monotonic() - tick < 1
            check_error(refused, 429, "overloaded", "in flight")
            assert int(refused.headers["retry-after"]) >= 1
            assert httpx.post(f"{s.url}/score", json={"texts": ["good"]}).status_code == 200
        time.sleep(0.3)  # the slow client left: its bytes are returned to the budget
        assert httpx.post(f"{s.url}/score", json={"texts": ["b" * 1500]}).status_code == 200
        assert "rankrm_inflight_bytes 0.0" in httpx.get(f"{s.url}/metrics").text


def test_slow_body_gets_408(engine: ControlledEngine) -> None:
    with running(engine, request_timeout_s=0.5) as s:
        head = b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
        answer = raw_exchange(s.url, head, b'{"texts": [')
        assert answer.startswith(b"HTTP/1.1 408"), answer


def fill_the_queue(
    server: Server, engine: ControlledEngine, requests: int = 3
) -> list[threading.Thread]:
    """``requests`` requests of 4 texts: with a batch of 4 and a queue of 8, the (slow) model
    holds one and the others wait (3: the queue is full). Returns their threads once they
    do. The model is held at the first request's batch until then, so a slow client thread
    cannot arrive after that batch is done; it then takes its ``delay_s`` as before."""
    busy = [
        threading.Thread(
            target=httpx.post,
            args=(f"{server.url}/score",),
            kwargs={"json": {"texts": [f"good {i}"] * 4}, "timeout": 30},
        )
        for i in range(requests)
    ]
    engine.hold.clear()
    try:
        busy[0].start()  # in the model before the others arrive: with all three queued at
        assert engine.started.wait(5)  # once, the queue of 8 would refuse the third
        for thread in busy[1:]:
            thread.start()
        batcher = server.app.state.service.batcher
        deadline = time.monotonic() + 10
        while batcher.queued < 4 * (requests - 1):  # the others are queued behind the model's
            assert time.monotonic() < deadline, f"only {batcher.queued} texts queued"
            time.sleep(0.01)
    finally:
        engine.hold.set()
    return busy


def test_every_scoring_endpoint_is_admitted_before_its_body() -> None:
    """The paths Intake admits before reading a body are the scoring routes (those the fast
    lane answers), so a new scoring endpoint cannot be left out."""
    assert set(lanes(router.routes)) == SCORING_PATHS


@pytest.mark.parametrize("path", ["/score", "/groups"])
def test_full_queue_refuses_before_reading_the_body(engine: ControlledEngine, path: str) -> None:
    engine.delay_s = 0.5
    with running(engine, max_queue=8, max_items=8, max_batch_size=4) as s:
        busy = fill_the_queue(s, engine)
        head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n".encode()
        answer = raw_exchange(s.url, head)  # headers only: refused without the body
        assert answer.startswith(b"HTTP/1.1 429"), answer
        assert b"retry-after" in answer.lower()
        for thread in busy:
            thread.join()


def test_a_request_that_does_not_fit_is_refused_before_it_is_tokenised(
    engine: ControlledEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 texts wait, 6 more would pass the limit of 8: 429 after the body is parsed, before
    any tokenisation (a refusal must not cost tokenising hundreds of texts)."""
    engine.delay_s = 0.5
    encoded: list[int] = []
    encode = engine.encode

    def counting(prompts: Any, responses: Any, **kwargs: Any) -> Any:
        encoded.append(len(responses))
        return encode(prompts, responses, **kwargs)

    monkeypatch.setattr(engine, "encode", counting)
    with running(engine, max_queue=8, max_items=8, max_batch_size=4) as s:
        busy = fill_the_queue(s, engine, requests=2)
        before = list(encoded)
        answer = httpx.post(f"{s.url}/score", json={"texts": ["good"] * 6}, timeout=30)
        assert answer.status_code == 429, answer.text
        assert "queue full (4 texts waiting, limit 8)" in answer.json()["error"]
        assert encoded == before  # nothing of the refused request was tokenised
        for thread in busy:
            thread.join()


@pytest.mark.parametrize("workers", [1, 2])
def test_queue_is_bounded_by_measured_model_time(
    engine: ControlledEngine, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 1 ms per padded token a worker, the 2 s bound holds 2,000 tokens per worker."""
    settings = Settings(model_dir="unused", max_queue_wait_s=2.0, model_workers=workers)
    batcher = Batcher(engine, settings, Metrics.create())
    monkeypatch.setattr(Batcher, "running", True)  # as if started
    batcher._s_per_token = 0.001  # as measured: 1 ms per padded token
    assert batcher.refusal(texts=1, tokens=1500 * workers) is None
    refused = batcher.refusal(texts=1, tokens=2500 * workers)
    assert refused is not None
    assert "2.5s of work waiting, limit 2s" in refused.message
    assert refused.retry_after is not None and refused.retry_after >= 0.5


def test_large_requests_are_tokenised_in_slices_exactly_as_small_ones(server: Server) -> None:
    texts = [f"good movie {'very ' * (i % 50)}and the plot {i}" for i in range(400)]
    whole = httpx.post(f"{server.url}/score", json={"texts": texts}, timeout=60).json()
    one_by_one = [
        httpx.post(f"{server.url}/score", json={"texts": [t]}).json()["rewards"][0]
        for t in texts[:20]
    ]
    assert whole["rewards"][:20] == pytest.approx(one_by_one, abs=1e-5)
    assert whole["usage"]["texts"] == 400


def test_settings_errors_name_the_values() -> None:
    with pytest.raises(ValueError, match=r"max_inflight_bytes \(2048\).*max_body_bytes \(4096\)"):
        Settings(model_dir="unused", max_inflight_bytes=2048, max_body_bytes=4096)
    with pytest.raises(ValueError, match=r"max_queue_wait_s \(40\).*request_timeout_s \(30\)"):
        Settings(model_dir="unused", max_queue_wait_s=40)


# ----------------------------------------------------------------------- security review


def test_keys_never_reach_logs_info_or_metrics(
    engine: ControlledEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    with running(engine, api_keys="secret-key-9876", access_log=True) as s:
        for key in ("secret-key-9876", "wrong-key-5555"):
            httpx.post(f"{s.url}/score", json={"texts": ["a"]}, headers={"x-api-key": key})
        httpx.post(f"{s.url}/score", json={"texts": [1]}, headers={"x-api-key": "wrong-key-5555"})
        auth = {"authorization": "Bearer secret-key-9876"}
        info = httpx.get(f"{s.url}/info", headers=auth)
        metrics = httpx.get(f"{s.url}/metrics")
    assert info.status_code == 200 and info.json()["auth"] is True
    for shown in (info.text, metrics.text, caplog.text):
        assert "secret-key-9876" not in shown
        assert "wrong-key-5555" not in shown


def test_cors_is_off_unless_configured(engine: ControlledEngine) -> None:
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    with running(engine) as s:
        answer = httpx.options(f"{s.url}/score", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        scored = httpx.post(
            f"{s.url}/score", json={"texts": ["a"]}, headers={"origin": "https://x.example"}
        )
        assert "access-control-allow-origin" not in scored.headers
    with running(engine, cors_origins="https://labels.example") as s:
        allowed = {**preflight, "origin": "https://labels.example"}
        answer = httpx.options(f"{s.url}/score", headers=allowed)
        assert answer.headers["access-control-allow-origin"] == "https://labels.example"
        refused = httpx.options(f"{s.url}/score", headers=preflight)
        assert "access-control-allow-origin" not in refused.headers


def test_a_connection_retrying_before_retry_after_is_held(engine: ControlledEngine) -> None:
    engine.delay_s = 1.0  # the queue stays full well past the first request, even on a slow CI
    with running(engine, max_queue=8, max_items=8, max_batch_size=4) as s:
        busy = fill_the_queue(s, engine)
        with httpx.Client(base_url=s.url, timeout=30) as keep_alive:
            first = keep_alive.post("/score", json={"texts": ["a"]})
            check_error(first, 429, "overloaded")
            told = int(first.headers["retry-after"])
            tick = time.monotonic()
            again = keep_alive.post("/score", json={"texts": ["a"]})  # at once: too early
            held = time.monotonic() - tick
        assert held >= told - 0.1, "an early retry waits out its Retry-After"
        assert again.status_code == 200, again.text  # by then the queue had room
        other = httpx.post(f"{s.url}/health")  # other connections are not held
        assert other.status_code == 405
        assert "rankrm_held_retries_total 1.0" in httpx.get(f"{s.url}/metrics").text
        for thread in busy:
            thread.join()


def test_a_repeated_key_header_is_read_as_the_routes_read_it(engine: ControlledEngine) -> None:
    """The first Authorization header counts, at admission, in the fast lane and in FastAPI
    (admission used to read the last one and refuse what the route would accept)."""
    right, wrong = "Bearer secret-key-1", "Bearer wrong-key-12"
    with running(engine, api_keys=["secret-key-1"]) as s:
        for path, body in (("/score", {"texts": ["good"]}), ("/score", {"texts": "bad"})):
            first_right = httpx.post(
                s.url + path, json=body,
                headers=[("authorization", right), ("authorization", wrong)],
            )  # fmt: skip
            assert first_right.status_code in (200, 422), first_right.text
            first_wrong = httpx.post(
                s.url + path, json=body,
                headers=[("authorization", wrong), ("authorization", right)],
            )  # fmt: skip
            assert first_wrong.status_code == 401
