"""The service under abuse, measured: overload, huge requests, slow clients.

    .venv/bin/python bench/hardening.py --model models/default --out docs/hardening.json

Starts ``rankrm serve`` in its own process and drives it from this one with a small
HTTP/1.1 client on raw asyncio streams (keep-alive, one request in flight per connection,
a closed loop like a trainer's workers), so every request's status and latency is known:

* ``overload``: C connections each sending K texts at once, far past saturation. Reports
  the status mix, p50/p99 latency of 200s and of 429s, and ``/health`` latency probed
  during the storm.
* ``big``: connections sending the largest bodies the limits allow (many long texts),
  with the server's RSS sampled: before, peak (VmHWM) and after.
* ``cjk``: requests of 16 texts of 100,000 CJK characters, with ``/health`` probed.
* ``fair``: small requests alone, then beside back-to-back 512-text requests.
* ``slow``: connections trickling their headers (or body) a byte at a time for the whole
  run, beside normal clients whose latency is reported.

Each scenario prints one JSON line; ``--out`` collects them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load_clients import Tally, client, free_port, probe, rss_mb, sentence, slow_client

ROOT = Path(__file__).resolve().parents[1]


def server_priority() -> None:
    """In the server's child process: back to nice 0, above the clients (needs root or
    RLIMIT_NICE; where refused, the server runs at the clients' value)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def start_server(model: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    command = [
        str(ROOT / ".venv" / "bin" / "rankrm"),
        "serve",
        "--model-dir",
        str(model),
        "--port",
        str(port),
        *extra,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=server_priority
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in sock.recv(100):
                    return process
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the service did not become ready")


async def curl_probe(url: tuple[str, int], body: bytes, seconds: float, tally: Tally) -> None:
    """POST /score 20 times a second, each on a new connection (a client not refused
    before: the service holds a connection that retries before its Retry-After), from curl
    (a C client: what it measures is the service, not this process's event loop)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as handle:
        handle.write(body)
        handle.flush()
        count = int(seconds * 20)
        process = await asyncio.create_subprocess_exec(
            "curl", "-s", "--rate", "20/s", *["-o", "/dev/null"] * count, "-H",
            "content-type: application/json", "-H", "connection: close",
            "--data-binary", f"@{handle.name}",
            "-w", "%{http_code} %{time_total}\n",
            *[f"http://{url[0]}:{url[1]}/score"] * count,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
    for line in out.decode().splitlines():
        status, seconds_taken = line.split()
        tally.add(status, float(seconds_taken))


async def overload(
    url: tuple[str, int], connections: int, texts: int, seconds: float, pause_ms: float = 0
) -> dict[str, Any]:
    """A storm of ``connections`` kept-alive connections, each sending its next request
    ``pause_ms`` after a refusal (0: at once, from wrk; else from Python clients). Beside
    it, curl measures what one more scoring request on a kept-alive connection meets, and
    GET /health is probed on a fresh connection each time."""
    rng = random.Random(0)
    bodies = [
        json.dumps({"texts": [sentence(rng, rng.randint(5, 60)) for _ in range(texts)]}).encode()
        for _ in range(64)
    ]
    scoring, refused, health, python_storm = Tally(), Tally(), Tally(), Tally()
    # A request of 400 texts: with the queue near its limit it is refused, so this probe
    # measures refusals by the hundred (the 8-text probe is mostly admitted).
    big_body = json.dumps({"texts": [sentence(rng, 8) for _ in range(400)]}).encode()
    until = time.monotonic() + seconds
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as handle:
        handle.write(b"\n".join(bodies) + b"\n")
        handle.flush()
        if pause_ms:  # wrk's own pacing stalls: Python clients, pausing after each refusal
            storm: Any = asyncio.gather(
                *(
                    client(url, bodies, "/score", until, python_storm, i, backoff=pause_ms / 1000)
                    for i in range(connections)
                )
            )
        else:
            process = await asyncio.create_subprocess_exec(
                "wrk", f"-c{connections}", "-t2", f"-d{seconds:.0f}s", "--timeout", "60s",
                "-s", str(ROOT / "bench" / "overload.lua"), f"http://{url[0]}:{url[1]}",
                "--", handle.name, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            storm = process.communicate()
        await asyncio.sleep(1)  # let the storm build up
        out, *_ = await asyncio.gather(
            storm,
            curl_probe(url, bodies[0], seconds - 2, scoring),
            curl_probe(url, big_body, seconds - 2, refused),
            probe(url, "/health", until, health),
        )
    result: dict[str, Any] = {
        "connections": connections,
        "texts_per_request": texts,
        "pause_ms": pause_ms,
    }
    if pause_ms:
        result["storm"] = python_storm.summary()
        result["storm"]["client"] = f"python, {pause_ms:g} ms pause after a refusal"
        result["storm"]["rate_per_s"] = round(result["storm"]["requests"] / seconds)
    else:
        result["storm"] = json.loads(out[0].decode().strip().splitlines()[-1])
        result["storm"]["client"] = "wrk, no pause"
        result["storm"]["rate_per_s"] = round(
            result["storm"]["requests"] / (result["storm"]["duration_us"] / 1e6)
        )
    result["probe_score"] = scoring.summary()
    result["probe_score_400_texts"] = refused.summary()
    result["probe_health"] = health.summary()
    return result


async def big(
    url: tuple[str, int], connections: int, texts: int, chars: int, seconds: float
) -> dict[str, Any]:
    rng = random.Random(1)
    bodies = []
    for _ in range(4):
        long_texts = []
        for _ in range(texts):
            text = sentence(rng, chars // 5)
            long_texts.append(text[:chars])
        bodies.append(json.dumps({"texts": long_texts}).encode())
    tally = Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(client(url, bodies, "/score", until, tally, i) for i in range(connections))
    )
    result = tally.summary()
    result["body_mb"] = round(len(bodies[0]) / 2**20, 2)
    return result


async def cjk(url: tuple[str, int], seconds: float) -> dict[str, Any]:
    """2 connections sending 16 texts of 100,000 CJK characters back to back (4.6 MB of
    UTF-8 each), with ``/health`` probed beside them: tokenising them must not stop the
    event loop."""
    rng = random.Random(4)
    text = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(100_000))
    body = json.dumps({"texts": [text] * 16}, ensure_ascii=False).encode()
    tally, health = Tally(), Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(
        probe(url, "/health", until, health),
        *(client(url, [body], "/score", until, tally, i) for i in range(2)),
    )
    result = tally.summary()
    result["health"] = health.summary()
    result["body_mb"] = round(len(body) / 2**20, 2)
    return result


async def slow(url: tuple[str, int], slow_connections: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(2)
    bodies = [json.dumps({"texts": [sentence(rng, 20)]}).encode() for _ in range(64)]
    tally, health, trickled = Tally(), Tally(), Tally()
    until = time.monotonic() + seconds
    trickles = [slow_client(url, until, i % 2 == 1, trickled) for i in range(slow_connections)]
    await asyncio.gather(
        *trickles,
        probe(url, "/health", until, health),
        *(client(url, bodies, "/score", until, tally, i) for i in range(8)),
    )
    result = tally.summary()
    result["health"] = health.summary()
    result["slow_connections"] = trickled.summary()
    return result


async def fair(url: tuple[str, int], seconds: float) -> dict[str, Any]:
    """8 clients sending one short text at a time, alone and then beside a client sending
    512-text requests back to back: how much the bulk request slows the small ones."""
    rng = random.Random(3)
    small = [json.dumps({"texts": [sentence(rng, 20)]}).encode() for _ in range(64)]
    bulk = [json.dumps({"texts": [sentence(rng, rng.randint(20, 60)) for _ in range(512)]})]
    result: dict[str, Any] = {}
    for phase, with_bulk in (("alone", False), ("beside_bulk", True)):
        tally, bulk_tally = Tally(), Tally()
        until = time.monotonic() + seconds
        clients = [client(url, small, "/score", until, tally, i) for i in range(8)]
        if with_bulk:
            clients.append(client(url, [b.encode() for b in bulk], "/score", until, bulk_tally, 99))
        await asyncio.gather(*clients)
        result[phase] = tally.summary()
        result[phase]["requests_per_s"] = round(result[phase]["requests"] / seconds, 1)
        if with_bulk:
            result["bulk"] = bulk_tally.summary()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--out", type=Path, help="write every scenario's figures here")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--scenarios", default="overload@0,overload@1000,big,slow")
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--texts", type=int, default=8)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra serve flag")
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="run this process and its load generators (wrk, curl) at this nice value, the "
        "server at 0: clients on other machines, as in a deployment, without a second machine",
    )
    args = parser.parse_args()
    if args.client_nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.client_nice)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results: dict[str, Any] = {"command": " ".join(sys.argv)}
    for scenario in args.scenarios.split(","):
        port = free_port()
        server = start_server(args.model, port, args.serve_arg)
        url = ("127.0.0.1", port)
        try:
            before = rss_mb(server.pid)[0]
            if scenario == "overload":
                figures = asyncio.run(overload(url, args.connections, args.texts, args.seconds))
            elif scenario.startswith("overload@"):  # overload@PAUSE_MS between requests
                pause = float(scenario.partition("@")[2])
                figures = asyncio.run(
                    overload(url, args.connections, args.texts, args.seconds, pause)
                )
            elif scenario == "big":
                figures = asyncio.run(big(url, 16, 80, 100_000, args.seconds))
            elif scenario == "slow":
                figures = asyncio.run(slow(url, 500, args.seconds))
            elif scenario == "cjk":
                figures = asyncio.run(cjk(url, args.seconds))
            elif scenario == "fair":
                figures = asyncio.run(fair(url, args.seconds))
            else:
                raise SystemExit(f"unknown scenario {scenario!r}")
            time.sleep(1)
            after, peak = rss_mb(server.pid)
            figures["rss_mb"] = {
                "before": round(before),
                "peak": round(peak),
                "after": round(after),
            }
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=60)
        tracebacks = stderr.decode(errors="replace").count("Traceback")
        figures["server_tracebacks"] = tracebacks
        results[scenario] = figures
        print(json.dumps({scenario: figures}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
