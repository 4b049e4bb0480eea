"""Limits on what a connection sends before its body, and on open connections, against a
real server on loopback with raw sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx

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
