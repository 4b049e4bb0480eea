"""Where the service's texts/s go, against its model's own ceiling: the same calls it made,
run with nothing else on the machine, and the texts sorted by length.

    .venv/bin/python bench/losses.py --workloads mixed,short --rounds 3

For each workload, in rounds (the order turned each round, as ``make bench`` does):

* **service**: the service under wrk (64 one-text connections), every model call it makes
  logged (the texts' lengths, the call's time and thread); the CPU of each of its threads
  and of wrk from /proc.
* **replay**: the calls the service made in that run, with texts of the same lengths, run
  back to back in this process on two callers, one thread each (as the service's two
  workers run): the service's batches without HTTP, the event loop or wrk.
* **ceiling**: the workload sorted by length, in calls of 4, 8 or 16 texts (the best), on
  the same two callers: batches with next to no padding.

The products of three factors make the service's figure:
``service = ceiling x batches (replay / ceiling) x share (the calls' own speed in the
service / replay) x busy (the time the workers spend in calls)``. ``batches`` is what
forming calls from the texts waiting costs (padding, shapes); ``share`` what running beside
the event loop and wrk costs the calls; ``busy`` the workers' time outside calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu_split import schedstat  # noqa: E402
from serve_bench import (  # noqa: E402
    by_length,
    free_port,
    passes_rate,
    raw_rate,
    start,
    workloads,
    write_bodies,
    wrk_command,
)

from rankrm.runtime import OnnxRewardModel  # noqa: E402

PROBE = "--probe-calls-to"  # run as the service, logging its model calls to a file
CLIENTS = 64


def serve_with_probe(log_path: str, serve_args: list[str]) -> None:
    """``rankrm serve`` with each model call noted in memory (wall time at its start,
    seconds, the thread, the texts' lengths, whether it was lone), the notes written to
    ``log_path`` as JSON whenever the bench asks (it writes to the FIFO ``log_path.ask``).
    In memory: a write a call would hand the GIL to the event loop and wait to get it
    back, outside the call, a cost of the probe's own in what it measures."""
    import app.engine

    run = app.engine.OnnxEngine.run
    notes: list[list[Any]] = []

    def noted(self: app.engine.OnnxEngine, encodings: Any, *, lone: bool = False) -> Any:
        started, tick = time.time(), time.perf_counter()
        rewards = run(self, encodings, lone=lone)
        seconds = time.perf_counter() - tick
        notes.append(
            [started, seconds, threading.get_ident(), [len(e.ids) for e in encodings], lone]
        )
        return rewards

    def dump() -> None:
        Path(log_path + ".part").write_text(json.dumps(notes))
        os.replace(log_path + ".part", log_path)

    app.engine.OnnxEngine.run = noted  # type: ignore[method-assign]

    def answer_asks() -> None:  # blocks in open() until the bench asks, without the GIL
        while True:
            with open(log_path + ".ask") as asked:
                asked.read()
            dump()

    threading.Thread(target=answer_asks, daemon=True).start()
    from rankrm.cli import main

    sys.argv = ["rankrm", "serve", *serve_args]
    main()


def probe_notes(log_path: Path) -> list[list[Any]]:
    """The calls the probe has noted so far."""
    log_path.unlink(missing_ok=True)
    with open(str(log_path) + ".ask", "w") as ask:
        ask.write("notes, please")
    deadline = time.monotonic() + 30
    while not log_path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the probe did not write its notes")
        time.sleep(0.05)
    notes: list[list[Any]] = json.loads(log_path.read_text())
    return notes


@dataclass
class ServiceRun:
    texts_per_s: float
    calls: list[list[Any]]  # the probe's notes of the calls within the run
    cpu: list[float]  # cores used by each busy thread of the service, most first
    wrk_cpu: float  # cores used by wrk


def run_service(url: str, pid: int, log_path: Path, bodies: str, seconds: int) -> ServiceRun:
    """wrk on the service for ``seconds`` (after a one-second warm-up), with what it cost."""

    def wrk(duration: int) -> subprocess.Popen[str]:
        command = wrk_command(url, bodies, CLIENTS, duration)
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    wrk(1).wait()
    before, began = schedstat(pid), time.time()
    load = wrk(seconds)
    assert load.stdout is not None
    out = load.stdout.read()
    _, _, usage = os.wait4(load.pid, 0)
    elapsed = time.time() - began
    after = schedstat(pid)
    stats = json.loads(out.strip().splitlines()[-1])
    if stats["errors"] or stats["non_2xx"]:
        raise RuntimeError(f"wrk saw errors: {stats}")
    calls = [c for c in probe_notes(log_path) if began <= c[0] <= c[0] + c[1] <= began + elapsed]
    ran = [after[t][0] - before[t][0] for t in after if t in before]  # ns on a core
    used = sorted((ns / 1e9 / elapsed for ns in ran), reverse=True)
    return ServiceRun(
        stats["requests"] / (stats["duration_us"] / 1e6),
        calls,
        [round(c, 2) for c in used if c >= 0.01],
        (usage.ru_utime + usage.ru_stime) / elapsed,
    )


def as_batches(calls: list[list[Any]], encodings: list[Any]) -> list[list[Any]]:
    """Each logged call as encodings of the same lengths (the nearest length where the
    workload has none of one)."""
    by_len: dict[int, Any] = {}
    for encoding in encodings:
        by_len.setdefault(len(encoding.ids), encoding)
    known = sorted(by_len)

    def of(length: int) -> Any:
        return by_len[min(known, key=lambda k: abs(k - length))]

    return [[of(n) for n in call[3]] for call in calls if not call[4]]


def sizes(calls: list[list[Any]]) -> str:
    """The share of texts in calls of 1, 2-3, 4-7, 8-15 and 16 or more texts."""
    bins = [(1, 1), (2, 3), (4, 7), (8, 15), (16, 10**9)]
    total = sum(len(c[3]) for c in calls) or 1
    shares = [sum(len(c[3]) for c in calls if lo <= len(c[3]) <= hi) / total for lo, hi in bins]
    return " ".join(f"{lo}{'+' if hi > 999 else f'-{hi}' if hi > lo else ''}: {share:.0%}"
                    for (lo, hi), share in zip(bins, shares, strict=True))  # fmt: skip


def best_sorted(model: OnnxRewardModel, ordered: list[Any], seconds: float) -> float:
    """The ceiling: the best of calls of 4, 8 and 16 texts sorted by length, two callers."""
    return max(raw_rate(model, ordered, size, seconds / 6, 2) for size in (4, 8, 16))


def report(name: str, rows: list[dict[str, Any]]) -> None:
    keys = ("service", "in_calls", "replay", "ceiling", "batches", "share", "busy")
    print(f"\n{name}: medians of {len(rows)} rounds")
    for key in keys:
        value = statistics.median(r[key] for r in rows)
        print(f"  {key:9} {value:8.3f}" if value < 2 else f"  {key:9} {value:8.0f}")
    for key in ("texts_per_call", "padding", "wrk_cpu"):
        print(f"  {key:14} {statistics.median(r[key] for r in rows):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--workloads", default="mixed,short,long")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()

    model = OnnxRewardModel.load(args.model, threads=1, spin=False)  # as each worker runs
    model.first_batch()
    texts = workloads(model)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "calls.json"
        os.mkfifo(str(log_path) + ".ask")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, __file__, PROBE, str(log_path), "--model-dir",
                   str(args.model), "--port", str(port), "--log-level", "warning"]  # fmt: skip
        server = start(command, url)
        try:
            for name in args.workloads.split(","):
                rows = measure(model, texts[name], name, url, server.pid, log_path, args, tmp)
                report(name, rows)
        finally:
            server.terminate()
            server.wait()


def measure(
    model: OnnxRewardModel,
    texts: list[str],
    name: str,
    url: str,
    pid: int,
    log_path: Path,
    args: argparse.Namespace,
    tmp: str,
) -> list[dict[str, Any]]:
    """``args.rounds`` rounds of the service, its calls replayed, and the ceiling."""
    bodies = str(Path(tmp) / f"{name}.jsonl")
    with open(bodies, "w") as handle:
        write_bodies(handle, texts, 1)
    encodings = model.encode([None] * len(texts), texts)
    ordered = by_length(model, texts)
    rows = []
    for round_ in range(args.rounds):
        # the replay runs this round's service calls, so it follows the service; the
        # ceiling goes last in one round and first in the next
        ceiling_first = round_ % 2 == 1
        ceiling = best_sorted(model, ordered, args.seconds) if ceiling_first else 0.0
        service = run_service(url, pid, log_path, bodies, args.seconds)
        replay = passes_rate(model, as_batches(service.calls, encodings), 0, 2)  # one pass
        ceiling = ceiling if ceiling_first else best_sorted(model, ordered, args.seconds)
        texts_in_calls = sum(len(c[3]) for c in service.calls)
        call_seconds = sum(c[1] for c in service.calls)
        in_calls = texts_in_calls / (call_seconds / 2)  # both workers in calls all the time
        padded = sum(len(c[3]) * max(c[3]) for c in service.calls)
        row = {
            "service": service.texts_per_s,
            "in_calls": in_calls,
            "replay": replay,
            "ceiling": ceiling,
            "batches": replay / ceiling,
            "share": in_calls / replay,
            "busy": service.texts_per_s / in_calls,
            "texts_per_call": texts_in_calls / len(service.calls),
            "padding": 1 - sum(sum(c[3]) for c in service.calls) / padded,
            "wrk_cpu": service.wrk_cpu,
            "call_sizes": sizes(service.calls),
        }
        rows.append(row)
        print(f"{name} round {round_ + 1}: service {row['service']:.0f} texts/s "
              f"(threads' cores {service.cpu}, wrk {service.wrk_cpu:.2f}), in calls "
              f"{in_calls:.0f}, replay {row['replay']:.0f}, ceiling {row['ceiling']:.0f}; "
              f"batches {row['batches']:.3f} share {row['share']:.3f} busy {row['busy']:.3f}; "
              f"texts in calls of {row['call_sizes']}",
              flush=True)  # fmt: skip
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == PROBE:
        serve_with_probe(sys.argv[2], sys.argv[3:])
    else:
        main()
