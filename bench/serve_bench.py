"""One command, one model file, one machine: onnxruntime's raw limit, this service under
load from a separate process, a plain FastAPI + onnxruntime server without batching (the
peer a user would write first), and a naive torch server.

    .venv/bin/python bench/serve_bench.py --model models/default \\
        --checkpoint runs/default-sst5/best --results docs/benchmarks.json

Load comes from wrk when installed (apt-get install wrk: a C client that leaves the CPU
to the servers), else from httpx in this process. Workloads: short (about 32 tokens),
long (about 128) and mixed texts from SST-5 (or synthetic sentences without
../shared/data). Scenarios: many concurrent one-text requests (64 connections, how
OpenRLHF calls), requests of 64 texts, and sequential one-text requests on an idle service
(latency). The first scenario, the one the throughput goals are judged on, alternates raw
onnxruntime, the service and the plain server in rounds (``--rounds``), each ratio taken
within its round. Prints throughput (texts/s) and p50/p95/p99 latency, writes the table
and a PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rankrm.runtime import OnnxRewardModel  # noqa: E402

SST5 = ROOT.parent / "shared" / "data" / "sst5" / "train.tsv"


@dataclass
class Result:
    """One measured scenario."""

    system: str
    workload: str
    scenario: str
    texts_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def row(self) -> str:
        return (
            f"| {self.system} | {self.workload} | {self.scenario} | {self.texts_per_s:.0f} | "
            f"{self.p50_ms:.1f} | {self.p95_ms:.1f} | {self.p99_ms:.1f} |"
        )


@dataclass
class Round:
    """One round of the goals' scenario: raw onnxruntime, the service and the plain server,
    measured back to back; the ratios are taken within the round."""

    raw: float
    service: Result
    plain: Result
    workers: float  # the service's model workers alone: one caller a core, one thread each

    @property
    def to_raw(self) -> float:
        return self.service.texts_per_s / self.raw

    @property
    def to_plain(self) -> float:
        return self.service.texts_per_s / self.plain.texts_per_s

    @property
    def to_workers(self) -> float:
        return self.service.texts_per_s / self.workers


def best_to_best(rounds: list[Round], system: str) -> float:
    """The service's best round against ``system``'s best (``raw`` or ``plain``).

    One onnxruntime session on two threads waits for its slower thread at every parallel
    step, so when another tenant slows one core it runs at about half speed (raw onnxruntime
    measured 58-61 texts/s in some rounds and 106-115 in others of one run, while the
    workers alone, two independent callers, held 112-122): a ratio within such a round
    flatters the service. Each system at its best round of the run does not."""
    best = max(r.raw if system == "raw" else r.plain.texts_per_s for r in rounds)
    return max(r.service.texts_per_s for r in rounds) / best


def workloads(model: OnnxRewardModel, seed: int = 0) -> dict[str, list[str]]:
    """Texts of about 32 tokens, about 128 tokens, and a mix of lengths."""
    rng = random.Random(seed)
    if SST5.is_file():
        sentences = [line.split("\t", 1)[1].strip() for line in SST5.read_text().splitlines()]
    else:
        words = "the film was good bad long short plot actors music story ending".split()
        sentences = [" ".join(rng.choices(words, k=rng.randint(5, 40))) for _ in range(3000)]
    lengths = [len(e.ids) for e in model.encode([None] * len(sentences), sentences)]
    short = [s for s, n in zip(sentences, lengths, strict=True) if 28 <= n <= 36]
    rng.shuffle(short)
    long_texts: list[str] = []
    while len(long_texts) < 512:
        text = ""
        while len(model.encode([None], [text or "x"])[0].ids) < 128:
            text += " " + rng.choice(sentences)
        long_texts.append(text.strip())
    mixed = [rng.choice(sentences) for _ in range(1024)]
    return {"short": short[:1024], "long": long_texts, "mixed": mixed}


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    p = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def raw_rate(
    model: OnnxRewardModel, encodings: list[Any], size: int, seconds: float, callers: int = 1
) -> float:
    """Texts/s of onnxruntime alone at one batch size over ``encodings`` (sorted by length),
    from ``callers`` threads each running batches back to back on the one session."""
    batches = [encodings[i : i + size] for i in range(0, len(encodings), size)]
    return passes_rate(model, batches, seconds, callers)


def passes_rate(
    model: OnnxRewardModel, batches: list[list[Any]], seconds: float, callers: int = 1
) -> float:
    """Texts/s of ``batches`` run in turn by ``callers`` threads on the one session, in
    whole passes: as many as begin within ``seconds``, at least one. Every text counts
    alike; a run cut off by the clock alone would end partway through a pass, and over
    texts sorted by length that part is the shortest texts (it flattered the mixed
    workload by about 10 % at 2 s a run, docs/benchmarks.md)."""
    taken = itertools.count()  # batch k of the run is batches[k % len(batches)]
    lock = threading.Lock()
    end: list[int] = []  # the first batch of the pass that did not begin
    stop = time.perf_counter() + seconds

    def work() -> None:
        while True:
            with lock:
                k = next(taken)
                if not end and k and k % len(batches) == 0 and time.perf_counter() >= stop:
                    end.append(k)
                if end and k >= end[0]:
                    return
            model.run_encodings(batches[k % len(batches)])

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = sum(len(batch) for batch in batches) * (end[0] // len(batches))
    return texts / (time.perf_counter() - started)


def by_length(model: OnnxRewardModel, texts: list[str]) -> list[Any]:
    """Encodings grouped by length, as the service groups them: padding is pure waste."""
    return sorted(model.encode([None] * len(texts), texts), key=lambda e: len(e.ids))


def raw_limit(
    model: OnnxRewardModel, texts: list[str], seconds: float, callers: int = 1
) -> tuple[int, float]:
    """Best texts/s of onnxruntime alone over batch sizes (texts grouped by length)."""
    encodings = by_length(model, texts)
    rates = {size: raw_rate(model, encodings, size, seconds, callers) for size in SIZES}
    best = max(rates, key=lambda size: rates[size])
    return best, rates[best]


# 4: the best size for two single-thread callers on long texts (docs/benchmarks.md, ninth round)
SIZES = (1, 4, 8, 16, 32, 64)


def batch1_latency_ms(model: OnnxRewardModel, texts: list[str], n: int = 200) -> float:
    """Median time of onnxruntime scoring one text (tokenisation included)."""
    times = []
    for text in texts[:n]:
        tick = time.perf_counter()
        model.run_encodings(model.encode([None], [text]))
        times.append(time.perf_counter() - tick)
    return float(np.median(times) * 1000)


async def load(
    url: str, texts: list[str], per_request: int, concurrency: int, seconds: float
) -> tuple[float, list[float]]:
    """``concurrency`` clients posting ``per_request`` texts each, back to back."""
    latencies: list[float] = []
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            while time.perf_counter() < stop:
                chunk = rng.sample(texts, per_request)
                tick = time.perf_counter()
                response = await client.post(f"{url}/score", json={"texts": chunk})
                response.raise_for_status()
                latencies.append(time.perf_counter() - tick)
                done += per_request

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.perf_counter() - start), latencies


def write_bodies(handle: TextIO, texts: list[str], per_request: int) -> None:
    """2,000 request bodies of ``per_request`` texts drawn from ``texts`` (seeded), a JSON
    line each: what ``post_bodies.lua`` sends, in turn."""
    rng = random.Random(0)
    for _ in range(2000):
        handle.write(json.dumps({"texts": rng.sample(texts, per_request)}) + "\n")


def wrk_command(url: str, bodies: str, concurrency: int, seconds: float) -> list[str]:
    """wrk on one thread, ``concurrency`` connections, posting the lines of ``bodies``."""
    script = str(ROOT / "bench" / "post_bodies.lua")
    return ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
            "-s", script, url, "--", bodies]  # fmt: skip


def wrk_load(
    url: str, texts: list[str], per_request: int, concurrency: int, seconds: float
) -> Result:
    """The same load from wrk (C, one thread): far less client CPU than Python on 2 cores."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        write_bodies(handle, texts, per_request)
    command = wrk_command(url, handle.name, concurrency, seconds)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    Path(handle.name).unlink()
    if stats["errors"] or stats["non_2xx"]:
        raise RuntimeError(f"wrk saw errors: {stats}")
    rate = stats["requests"] * per_request / (stats["duration_us"] / 1e6)
    p50, p95, p99 = (stats[k] / 1e3 for k in ("p50_us", "p95_us", "p99_us"))
    return Result("", "", "", rate, p50, p95, p99)


def measure(
    system: str,
    url: str,
    name: str,
    texts: list[str],
    scenario: str,
    per_request: int,
    concurrency: int,
    seconds: float,
    pids: list[int] | None = None,
) -> Result:
    """A warm-up second, then the run; with ``pids``, the servers quiet between the two."""
    if shutil.which("wrk"):
        wrk_load(url, texts, per_request, concurrency, 1.0)  # warm-up
        quiet(pids or [])
        result = wrk_load(url, texts, per_request, concurrency, seconds)
        result.system, result.workload, result.scenario = system, name, scenario
    else:
        asyncio.run(load(url, texts, per_request, concurrency, 1.0))  # warm-up
        quiet(pids or [])
        rate, latencies = asyncio.run(load(url, texts, per_request, concurrency, seconds))
        result = Result(system, name, scenario, rate, *percentiles(latencies))
    print(result.row(), flush=True)
    return result


CLIENTS = 64
ONE_TEXT = f"1 text x {CLIENTS} clients"
MANY_TEXTS = "64 texts x 4 clients"


def under_load(system: str, url: str, texts: dict[str, list[str]], seconds: float) -> list[Result]:
    """Each workload as 64 clients sending one text, and 4 clients sending 64 texts."""
    results = []
    for name, items in texts.items():
        results.append(measure(system, url, name, items, ONE_TEXT, 1, CLIENTS, seconds))
        results.append(measure(system, url, name, items, MANY_TEXTS, 64, 4, seconds))
    return results


def cpu_ticks(pid: int) -> int:
    """A process's CPU time so far (all its threads, user and system), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime and stime, the stat file's 14th and 15th


def quiet(pids: list[int], timeout_s: float = 60.0) -> None:
    """Wait until the servers have stopped computing: the plain server keeps scoring the
    requests of a load generator that has left (seconds of work on long texts), and the
    next run must not pay for it. Quiet: under 2 ticks of CPU (20 ms) in 0.2 s."""
    if not pids or not Path("/proc/self/stat").is_file():
        return
    deadline = time.monotonic() + timeout_s
    last = sum(cpu_ticks(pid) for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = sum(cpu_ticks(pid) for pid in pids)
        if now - last <= 2:
            return
        last = now


@dataclass
class Alone:
    """onnxruntime scored in this process: a session, its callers and a batch size each."""

    label: str
    model: OnnxRewardModel
    callers: int
    size: int = 1

    def rate(self, encodings: list[Any], seconds: float) -> float:
        return raw_rate(self.model, encodings, self.size, seconds, self.callers)


ORDER = ("raw", "service", "plain", "workers")


def alternated(
    alone: dict[str, Alone],
    encodings: list[Any],
    urls: dict[str, str],
    pids: list[int],
    name: str,
    texts: list[str],
    rounds: int,
    seconds: float,
) -> list[Round]:
    """``rounds`` rounds of raw onnxruntime, the service and the plain server under the
    one-text load, and the service's model workers alone; the order turned by one each
    round, so that no system always runs first or always follows another; each run starts
    with the servers quiet."""
    out = []
    for i in range(rounds):
        got: dict[str, Any] = {}
        for system in ORDER[i % 4 :] + ORDER[: i % 4]:
            quiet(pids)
            if system in alone:
                got[system] = alone[system].rate(encodings, seconds / 2)
                print(f"| {alone[system].label} | {name} | batch {alone[system].size}, "
                      f"round {i + 1} | {got[system]:.0f} | - | - | - |", flush=True)  # fmt: skip
            else:
                scenario = f"{ONE_TEXT}, round {i + 1}"
                got[system] = measure(
                    system, urls[system], name, texts, scenario, 1, CLIENTS, seconds, pids
                )
        out.append(Round(got["raw"], got["service"], got["plain"], got["workers"]))
    return out


def median_round(rounds: list[Round], system: str) -> Result:
    """The round with ``system``'s median texts/s (the middle one of an odd count)."""
    ranked = sorted((getattr(r, system) for r in rounds), key=lambda r: r.texts_per_s)
    pick = ranked[(len(ranked) - 1) // 2]
    return Result(system, pick.workload, ONE_TEXT, pick.texts_per_s, pick.p50_ms, pick.p95_ms,
                  pick.p99_ms)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    command: list[str], url: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server (in ``env``, else this environment) and wait until its /health
    answers."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {command}")


def chart(results: list[Result], limits: dict[str, dict[str, float]], path: Path) -> None:
    """Bars by workload: ``limits`` (label: texts/s by workload) first, then the servers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(limits.values())))
    groups = [(label, [values[n] for n in names]) for label, values in limits.items()]
    for system, scenario in (
        ("service", ONE_TEXT),
        ("plain", ONE_TEXT),
        ("naive", ONE_TEXT),
        ("service", MANY_TEXTS),
        ("plain", MANY_TEXTS),
        ("naive", MANY_TEXTS),
    ):
        values = [
            next(
                (
                    r.texts_per_s
                    for r in results
                    if (r.system, r.workload, r.scenario) == (system, n, scenario)
                ),
                0.0,
            )
            for n in names
        ]
        if any(values):  # a system not run (the naive server without --checkpoint) is left out
            groups.append((f"{system}: {scenario}", values))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(groups)
    for g, (label, values) in enumerate(groups):
        ax.bar([i + g * width for i in range(len(names))], values, width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    ax.set_ylabel("texts/s")
    ax.set_title("Throughput on one model file, same machine")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def peak_rss(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB; 0 where /proc cannot say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def spread(values: list[float], suffix: str = "") -> str:
    """The median, and every value in the order measured: ``1.05 (0.98, 1.05, 1.12)``."""
    return (f"{statistics.median(values):.2f}{suffix} "
            f"({', '.join(f'{v:.2f}' for v in values)})")  # fmt: skip


def medians(rounds: dict[str, list[Round]], system: str) -> dict[str, float]:
    """An in-process system's (``raw``, ``workers``) median texts/s over the rounds."""
    return {name: statistics.median(getattr(r, system) for r in rs) for name, rs in rounds.items()}


# Raw onnxruntime over the workers alone, in one round: 0.78-0.94 where the round was fast,
# 0.51-0.66 where one core was slowed (docs/benchmarks.md, ninth round).
SLOW_RAW = 0.7


def slow_rounds(rounds: list[Round]) -> int:
    """Rounds where raw onnxruntime ran in its slow mode (see :func:`best_to_best`)."""
    return sum(r.raw < SLOW_RAW * r.workers for r in rounds)


def goals_table(rounds: dict[str, list[Round]], idle_gap: float) -> list[str]:
    """The throughput issue's goals against this run, per workload: each round's ratio is
    taken within the round; a goal is met where the median of the rounds meets it and so
    does the service's best round against the other system's best (:func:`best_to_best`)."""

    def verdict(values: list[float], best: float, goal: float, suffix: str = "") -> str:
        mid = statistics.median(values)
        hits = sum(value >= goal for value in values)
        judged = "met" if min(mid, best) >= goal else "not met"
        return (f"{mid:.2f}{suffix} ({judged}; {hits} of {len(values)} rounds; best against "
                f"best {best:.2f}{suffix})")  # fmt: skip

    names = list(rounds)
    rows = [f"| goal | {' | '.join(names)} |", "| --- |" + " --- |" * len(names)]
    to_raw = [
        verdict([r.to_raw for r in rounds[n]], best_to_best(rounds[n], "raw"), 1.0) for n in names
    ]
    to_plain = [
        verdict([r.to_plain for r in rounds[n]], best_to_best(rounds[n], "plain"), 1.25, "x")
        for n in names
    ]
    rows.append(f"| service >= 1.0 x raw onnxruntime, {ONE_TEXT} | " + " | ".join(to_raw) + " |")
    rows.append(f"| service >= 1.25 x plain FastAPI + onnxruntime, {ONE_TEXT} | "
                + " | ".join(to_plain) + " |")  # fmt: skip
    slow = ", ".join(f"{n} {slow_rounds(rounds[n])} of {len(rounds[n])}" for n in names)
    rows.append(f"\nRounds where raw onnxruntime scored below {SLOW_RAW} of the workers alone "
                f"(its slow mode; 0.78-0.94 where both cores ran freely, ninth round): {slow}. "
                "Where all of a workload's rounds are, best against best flatters the service "
                "too.")  # fmt: skip
    met = "met" if idle_gap <= 1.5 else "not met"
    rows.append(f"\nIdle latency: service p50 {idle_gap:+.2f} ms over onnxruntime batch-1 "
                f"(goal within 1.5 ms: {met}).")  # fmt: skip
    return rows


def table_rows(
    results: list[Result],
    alone: dict[str, dict[str, Alone]],
    first: dict[str, dict[str, float]],
    rounds: dict[str, list[Round]],
) -> list[str]:
    """The results as a markdown table: onnxruntime alone first, the runs (one-text rows:
    the median round), onnxruntime alone over the rounds last."""
    table = [
        "| system | workload | scenario | texts/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    table += [
        f"| {a.label} | {n} | best batch {a.size} | {first[n][system]:.0f} | - | - | - |"
        for n, systems in alone.items()
        for system, a in systems.items()
    ]
    table += [r.row() for r in results]
    for system in ("raw", "workers"):
        table += [
            f"| {alone[n][system].label} | {n} | batch {alone[n][system].size}, median of the "
            f"rounds | {median:.0f} | - | - | - |"
            for n, median in medians(rounds, system).items()
        ]
    return table


BEGIN, END = "<!-- serve_bench: begin -->", "<!-- serve_bench: end -->"


def write_block(
    path: Path,
    command: str,
    service_args: str,
    table: list[str],
    summary: list[str],
    goals: list[str],
) -> None:
    """Replace the block between the markers in ``path`` (appended where there is none)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    block = [
        BEGIN,
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M')} at commit "
        f"{commit or '?'}" + (f", service flags `{service_args}`" if service_args else "") + ":",
        "",
        *table,
        "",
        "![throughput](benchmarks.png)",
        "",
        "Ratios printed by the run:",
        "",
        *summary,
        "",
        "Against the throughput issue's goals (this run):",
        "",
        *goals,
        END,
    ]
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(block) + rest.split(END, 1)[1]
    else:
        text += "\n" + "\n".join(block) + "\n"
    path.write_text(text)


def find(results: list[Result], system: str, workload: str, scenario: str) -> Result | None:
    return next(
        (r for r in results if (r.system, r.workload, r.scenario) == (system, workload, scenario)),
        None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--checkpoint", type=Path, help="HF checkpoint for the naive server")
    parser.add_argument("--seconds", type=float, default=8.0, help="each run but the rounds")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of raw, service and plain (one-text load)"
    )
    parser.add_argument(
        "--round-seconds", type=float, default=4.0, help="each server's run in a round"
    )
    parser.add_argument("--results", type=Path, help="write the table (JSON) and a PNG chart here")
    parser.add_argument(
        "--service-args", default="", help="extra `rankrm serve` flags, e.g. '--model-workers 2'"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one-text load only (for A/B runs of settings)"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="rewrite this file's block between the serve_bench markers with the results",
    )
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # As many threads as onnxruntime's default, spinning, but set: by default it pins its
    # workers to cores 1.., and a caller that lands on one of them runs at half speed
    # (measured: 144 against 297 texts/s), which made raw's own figure jump two-fold.
    model = OnnxRewardModel.load(args.model, threads=cores)
    single = OnnxRewardModel.load(args.model, threads=1, spin=False)  # as a model worker runs
    texts = workloads(model)
    alone: dict[str, dict[str, Alone]] = {}
    first: dict[str, dict[str, float]] = {}
    print("| system | workload | scenario | texts/s | p50 ms | p95 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, items in texts.items():
        alone[name] = {"raw": Alone("onnxruntime alone", model, 1),
                       "workers": Alone(f"onnxruntime, {cores} callers x 1 thread", single,
                                        cores or 1)}  # fmt: skip
        first[name] = {}
        for system, a in alone[name].items():
            a.size, first[name][system] = raw_limit(a.model, items, args.seconds / 4, a.callers)
            print(f"| {a.label} | {name} | best batch {a.size} | {first[name][system]:.0f} "
                  "| - | - | - |", flush=True)  # fmt: skip
    batch1 = batch1_latency_ms(model, texts["short"])

    results: list[Result] = []
    urls = {system: f"http://127.0.0.1:{free_port()}" for system in ("service", "plain")}
    port = {system: url.rsplit(":", 1)[1] for system, url in urls.items()}
    serve = [sys.executable, "-m", "rankrm", "serve", "--model-dir", str(args.model)]
    serve += ["--port", port["service"], "--log-level", "warning", *shlex.split(args.service_args)]
    plain = [sys.executable, str(ROOT / "bench" / "plain_server.py"), str(args.model)]
    servers = [start(serve, urls["service"]), start([*plain, port["plain"]], urls["plain"])]
    # This machine's speed drifts by tens of percent over minutes (shared cores), so the
    # goals' scenario alternates the three systems in rounds, each round's ratios taken
    # within it; the service and plain server's many-text scenario runs once after them.
    rounds: dict[str, list[Round]] = {}
    pids = [server.pid for server in servers]
    try:
        idle = measure("service", urls["service"], "short", texts["short"], "idle, 1 client",
                       1, 1, args.seconds)  # fmt: skip
        results.append(idle)
        for name, items in texts.items():
            encodings = by_length(model, items)
            rounds[name] = alternated(alone[name], encodings, urls, pids, name, items,
                                      args.rounds, args.round_seconds)  # fmt: skip
            results += [median_round(rounds[name], "service"), median_round(rounds[name], "plain")]
            if not args.quick:
                for system in ("service", "plain"):
                    quiet(pids)
                    many = measure(system, urls[system], name, items, MANY_TEXTS, 64, 4,
                                   args.seconds, pids)  # fmt: skip
                    results.append(many)
        peak_rss_mb = peak_rss(servers[0].pid)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    del model, single
    if args.checkpoint is not None and not args.quick:
        port_naive = free_port()
        url = f"http://127.0.0.1:{port_naive}"
        naive = start(
            [sys.executable, str(ROOT / "bench" / "naive_server.py"), str(args.checkpoint),
             str(port_naive)],
            url,
        )  # fmt: skip
        try:
            results += under_load("naive", url, texts, args.seconds)
        finally:
            naive.terminate()
            naive.wait()

    idle_gap = idle.p50_ms - batch1
    summary = [
        f"- onnxruntime batch-1 latency (short text, tokenisation included): "
        f"{batch1:.2f} ms; idle service p50: {idle.p50_ms:.2f} ms "
        f"({idle.p50_ms - batch1:+.2f} ms)"
    ]
    for name, rs in rounds.items():
        line = (
            f"- {name}: service/raw {spread([r.to_raw for r in rs])}, service/plain "
            f"{spread([r.to_plain for r in rs], 'x')}, raw/plain "
            f"{spread([r.raw / r.plain.texts_per_s for r in rs], 'x')}, service/workers "
            f"alone {spread([r.to_workers for r in rs])}, best round against best: "
            f"service/raw {best_to_best(rs, 'raw'):.2f}, service/plain "
            f"{best_to_best(rs, 'plain'):.2f}x; raw onnxruntime "
            f"{', '.join(f'{r.raw:.0f}' for r in rs)} texts/s over the rounds "
            f"({first[name]['raw']:.0f} first)"
        )
        one = find(results, "service", name, ONE_TEXT)
        naive_one = find(results, "naive", name, ONE_TEXT)
        if one is not None and naive_one is not None:
            line += f", service/naive {one.texts_per_s / naive_one.texts_per_s:.2f}x"
        summary.append(line)
    summary.append(f"- service peak RSS over the run: {peak_rss_mb:.0f} MB")
    goals = goals_table(rounds, idle_gap)
    print("\n".join(summary))
    print("\n".join(goals))
    table = table_rows(results, alone, first, rounds)
    if args.results is not None:
        report = {"table": table, "summary": summary, "goals": goals,
                  "service_args": args.service_args}  # fmt: skip
        args.results.write_text(json.dumps(report, indent=1) + "\n")
        limits = {alone["short"][system].label: medians(rounds, system)
                  for system in ("raw", "workers")}  # fmt: skip
        chart(results, limits, args.results.with_suffix(".png"))
    if args.markdown is not None:
        command = " ".join(["python", "bench/serve_bench.py", *sys.argv[1:]])
        write_block(args.markdown, command, args.service_args, table, summary, goals)


if __name__ == "__main__":
    main()
