"""Limits on what a connection sends before its body, and on open connections, against a
real server on loopback with raw sockets."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from typing import Any

import httpx
import pytest

from app import connection
from app.connection import OneSend
from tests.app.conftest import ControlledEngine, running


def connect(url: str, timeout: float = 5.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_answer(sock: socket.socket) -> tuple[bytes, dict[str, str]]:
    """The whole answer up to the server's close, as (head, JSON body)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, json.loads(body)


def test_a_head_over_the_byte_limit_is_431_and_closed(engine: ControlledEngine) -> None:
    with running(engine, max_header_bytes=4096) as s, connect(s.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        head, body = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 431"), head
        assert b"connection: close" in head
        assert body["error_type"] == "headers_too_large"
        assert "4096 bytes" in body["error"]


def test_an_endless_header_is_cut_off_while_it_arrives(engine: ControlledEngine) -> None:
    with running(engine, max_header_bytes=4096) as s, connect(s.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        try:
            for _ in range(200):  # 200 x 1 KiB, never finishing the header
                sock.sendall(b"a" * 1024)
                sent += 1024
                time.sleep(0.002)
        except OSError:  # the server closed the connection: what should happen
            pass
        head, _ = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 431"), head
        assert sent < 200 * 1024  # refused before all of it was sent


def test_too_many_headers_is_431(engine: ControlledEngine) -> None:
    with running(engine, max_header_count=20) as s, connect(s.url) as sock:
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
        head, body = read_answer(sock)
        assert head.startswith(b"HTTP/1.1 431"), head
        assert "more than 20 headers" in body["error"]


def test_heads_within_the_limits_are_served_even_when_sent_in_pieces(
    engine: ControlledEngine,
) -> None:
    with running(engine, max_header_bytes=4096, max_header_count=20) as s:
        headers = {f"x-h{i}": "v" * 200 for i in range(14)}  # about 3 KiB; httpx adds 5
        assert httpx.get(f"{s.url}/health", headers=headers).status_code == 200
        with connect(s.url) as sock:  # the same head a few bytes at a time, on keep-alive
            request = b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"".join(
                f"{k}: {v}\r\n".encode() for k, v in headers.items()
            )
            for _ in range(2):
                for start in range(0, len(request), 700):
                    sock.sendall(request[start : start + 700])
                    time.sleep(0.01)
                sock.sendall(b"\r\n")
                answer = sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200"), answer


def test_a_slow_head_and_a_silent_connection_get_408(engine: ControlledEngine) -> None:
    with running(engine, header_timeout_s=0.5) as s:
        with connect(s.url) as sock:
            tick = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # never finished
            head, body = read_answer(sock)
            assert head.startswith(b"HTTP/1.1 408"), head
            assert body["error_type"] == "header_timeout"
            assert time.monotonic() - tick < 3
        with connect(s.url) as sock:  # sends nothing at all
            head, _ = read_answer(sock)
            assert head.startswith(b"HTTP/1.1 408"), head


def test_connections_past_the_cap_get_503_and_others_go_on(engine: ControlledEngine) -> None:
    with running(engine, max_connections=3) as s:
        held = [connect(s.url) for _ in range(3)]
        try:
            time.sleep(0.3)  # adopted by the loop
            with connect(s.url) as extra:
                head, body = read_answer(extra)
            assert head.startswith(b"HTTP/1.1 503"), head
            assert b"retry-after: 1" in head
            assert body["error_type"] == "overloaded"
            held[0].sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert held[0].recv(65536).startswith(b"HTTP/1.1 200")  # the open ones are served
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)  # their closes seen
        assert httpx.get(f"{s.url}/health").status_code == 200


class Recording(asyncio.Transport):
    """A transport that notes each write and close."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[bytes | str] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.events.append(bytes(data))

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def test_writes_in_one_turn_of_the_loop_leave_in_one_send() -> None:
    """uvicorn writes a head, then a body: they reach the socket as one write."""

    async def go() -> list[bytes | str]:
        inner = Recording()
        transport = OneSend(inner, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b'{"rewards": [1.0]}')
        assert inner.events == []  # held until the turn ends
        assert transport.get_write_buffer_size() == 37
        await asyncio.sleep(0)
        transport.write(b"next")
        transport.close()  # what is held goes first
        transport.write(b"after close")
        await asyncio.sleep(0)
        return inner.events

    events = asyncio.run(go())
    assert events == [b'HTTP/1.1 200 OK\r\n\r\n{"rewards": [1.0]}', b"next", "close"]


# ---------------------------------------------------------------- the shortcut (app.fastlane)
def scoring_post(texts: list[str]) -> tuple[bytes, bytes]:
    """A keep-alive ``POST /score`` as (head, body)."""
    body = json.dumps({"texts": texts}).encode()
    head = b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body), body


def read_answers(sock: socket.socket, count: int) -> list[tuple[bytes, Any]]:
    """``count`` keep-alive answers in the order they come, each (head, JSON body)."""
    data = b""
    answers: list[tuple[bytes, Any]] = []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
        assert found is not None, head
        length = int(found.group(1))
        while len(data) < length:
            data += sock.recv(65536)
        answers.append((head, json.loads(data[:length])))
        data = data[length:]
    return answers


def test_a_late_body_is_held_for_the_shortcut_for_a_while_then_goes_the_usual_way(
    engine: ControlledEngine, shortcut_taken: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "SHORTCUT_BODY_GRACE_S", 0.3)
    with running(engine, request_timeout_s=1.5) as s, connect(s.url) as sock:
        expected = httpx.post(f"{s.url}/score", json={"texts": ["late body"]}).json()
        shortcut_taken.clear()
        head, body = scoring_post(["late body"])
        for late_s, taken in ((0.05, ["/score"]), (0.6, [])):
            sock.sendall(head + body[:5])
            time.sleep(late_s)  # the head, and some of the body, read on their own
            sock.sendall(body[5:])
            [(answer_head, answer)] = read_answers(sock, 1)
            assert answer_head.startswith(b"HTTP/1.1 200"), answer_head
            assert answer["rewards"] == expected["rewards"]
            assert shortcut_taken == taken, late_s  # past the grace: the ASGI layers
            shortcut_taken.clear()
        sock.sendall(head + body[:5])  # and the rest never comes: Intake's deadline
        [(answer_head, answer)] = read_answers(sock, 1)
        assert answer_head.startswith(b"HTTP/1.1 408"), answer_head
        assert answer["error_type"] == "body_timeout"


def test_pipelined_requests_are_answered_in_order(
    engine: ControlledEngine, shortcut_taken: list[str]
) -> None:
    engine.delay_s = 0.2  # the first is still in the model when the others arrive
    with running(engine) as s, connect(s.url) as sock:
        first, second = scoring_post(["the first"]), scoring_post(["the second one"])
        sock.sendall(b"".join([*first, *second, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"]))
        answers = read_answers(sock, 3)
        # the first went the short way; the second waited behind it, on uvicorn's pipeline
        assert shortcut_taken == ["/score"]
        assert [head.split(b"\r\n")[0] for head, _ in answers] == [b"HTTP/1.1 200 OK"] * 3
        one, two = (httpx.post(f"{s.url}/score", json={"texts": [t]}).json()["rewards"]
                    for t in ("the first", "the second one"))  # fmt: skip
        assert answers[0][1]["rewards"] == one and answers[1][1]["rewards"] == two
        assert answers[2][1]["status"] == "ok"


def test_an_answer_from_the_shortcut_is_a_complete_keep_alive_response(
    engine: ControlledEngine,
) -> None:
    with running(engine) as s, connect(s.url) as sock:
        for text in ("again", "and again"):  # one connection, kept alive
            sock.sendall(b"".join(scoring_post([text])))
            [(head, answer)] = read_answers(sock, 1)
            lines = head.decode().split("\r\n")
            assert lines[0] == "HTTP/1.1 200 OK"
            names = sorted(line.split(":")[0].lower() for line in lines[1:])
            assert names == ["content-length", "content-type", "date", "server"]
            assert len(answer["rewards"]) == 1
