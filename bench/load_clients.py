"""The load side of bench/hardening.py: a small HTTP/1.1 client on raw asyncio streams
(keep-alive, one request in flight per connection), probes, slow clients, and the tally of
statuses and latencies they fill."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WORDS = (
    "the film was good bad long short plot actors music story ending moving dull funny "
    "slow brilliant awful script scene camera director performance"
).split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of ``pid`` in MiB (VmRSS, VmHWM)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


@dataclass
class Tally:
    """Statuses and latencies of one scenario."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, seconds: float) -> None:
        self.latencies.setdefault(status, []).append(seconds)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": sum(len(v) for v in self.latencies.values())}
        out["status"] = {k: len(v) for k, v in sorted(self.latencies.items())}
        for status, values in sorted(self.latencies.items()):
            ms = np.array(values) * 1000
            out[f"p50_ms_{status}"] = round(float(np.percentile(ms, 50)), 1)
            out[f"p99_ms_{status}"] = round(float(np.percentile(ms, 99)), 1)
            out[f"max_ms_{status}"] = round(float(ms.max()), 1)
        out["connection_errors"] = dict(self.errors)
        return out


async def request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str, body: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on an open connection; the status and body of its answer."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("closed before answering")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def client(
    url: tuple[str, int],
    bodies: list[bytes],
    path: str,
    until: float,
    tally: Tally,
    seed: int,
    backoff: float = 0.0,
) -> None:
    """A closed loop of requests on one keep-alive connection (reconnecting if closed)."""
    rng = random.Random(seed)
    reader = writer = None
    while time.monotonic() < until:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(*url)
            assert reader is not None
            started = time.monotonic()
            status, _ = await request(reader, writer, "POST", path, rng.choice(bodies))
            tally.add(str(status), time.monotonic() - started)
            if backoff and status != 200:
                await asyncio.sleep(backoff)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def probe(
    url: tuple[str, int], path: str, until: float, tally: Tally, body: bytes | None = None
) -> None:
    """``GET path`` (or ``POST body``) every 100 ms on a fresh connection each time."""
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(*url)
            method = "GET" if body is None else "POST"
            status, _ = await request(reader, writer, method, path, body or b"")
            tally.add(str(status), time.monotonic() - started)
            writer.close()
        except (OSError, asyncio.IncompleteReadError) as exc:
            tally.errors[type(exc).__name__] += 1
        await asyncio.sleep(0.1)


async def slow_client(url: tuple[str, int], until: float, in_body: bool, tally: Tally) -> None:
    """Send a request's headers (or its body) one byte a second until ``until``, or until
    the server answers; what it answered (and when) goes to ``tally``."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(*url)
    except OSError:
        tally.errors["connect"] += 1
        return
    answer = asyncio.ensure_future(reader.read(200))  # whatever the server says, any time
    head = b"POST /score HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\n"
    payload = b'{"texts": ["' + b"a" * 99_980 + b'"]}'
    stream = payload if in_body else head
    if in_body:
        writer.write(head)
    try:
        for byte in stream:
            if time.monotonic() > until or answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait([answer], timeout=1.0)
    except (OSError, RuntimeError):  # the server closed it (uvloop raises RuntimeError)
        pass
    kind = "head" if not in_body else "body"
    got = answer.result() if answer.done() and answer.exception() is None else b""
    answer.cancel()
    status = got.split()[1].decode() if got.startswith(b"HTTP/1.1 ") else "no answer"
    tally.add(f"{kind}:{status}", time.monotonic() - started)
    writer.close()
