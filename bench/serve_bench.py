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
(latency). Prints throughput (texts/s) and p50/p95/p99 latency, writes the table
and a PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def raw_rate(model: OnnxRewardModel, encodings: list[Any], size: int, seconds: float) -> float:
    """Texts/s of onnxruntime alone at one batch size over ``encodings`` (sorted by length)."""
    start, done, i = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds:
        batch = encodings[i : i + size] or encodings[:size]
        model.run_encodings(batch)
        done += len(batch)
        i = (i + size) % len(encodings)
    return done / (time.perf_counter() - start)


def by_length(model: OnnxRewardModel, texts: list[str]) -> list[Any]:
    """Encodings grouped by length, as the service groups them: padding is pure waste."""
    return sorted(model.encode([None] * len(texts), texts), key=lambda e: len(e.ids))


def raw_limit(model: OnnxRewardModel, texts: list[str], seconds: float) -> tuple[int, float]:
    """Best texts/s of onnxruntime alone over batch sizes (texts grouped by length)."""
    encodings = by_length(model, texts)
    rates = {size: raw_rate(model, encodings, size, seconds) for size in (1, 8, 16, 32, 64)}
    best = max(rates, key=lambda size: rates[size])
    return best, rates[best]


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


def wrk_load(
    url: str, texts: list[str], per_request: int, concurrency: int, seconds: float
) -> Result:
    """The same load from wrk (C, one thread): far less client CPU than Python on 2 cores."""
    rng = random.Random(0)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        for _ in range(2000):
            handle.write(json.dumps({"texts": rng.sample(texts, per_request)}) + "\n")
    script = str(ROOT / "bench" / "post_bodies.lua")
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
               "-s", script, url, "--", handle.name]  # fmt: skip
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
) -> Result:
    if shutil.which("wrk"):
        wrk_load(url, texts, per_request, concurrency, 1.0)  # warm-up
        result = wrk_load(url, texts, per_request, concurrency, seconds)
        result.system, result.workload, result.scenario = system, name, scenario
    else:
        asyncio.run(load(url, texts, per_request, concurrency, 1.0))  # warm-up
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


def chart(results: list[Result], raw: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(raw)
    groups = [("raw onnxruntime", [raw[n] for n in names])]
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


# Raw onnxruntime measured around the runs within this share of its first figure: a steady
# machine. Outside it (seen: 0.53 on a throttled morning) the ratios to raw say nothing.
STEADY = (0.8, 1.25)


def goals_table(
    results: list[Result],
    raw: dict[str, float],
    around: dict[str, float],
    names: list[str],
    idle_gap: float,
) -> list[str]:
    """The throughput issue's goals against this run: met or not, per workload; a ratio to
    raw onnxruntime is not judged where raw's own speed moved during the run."""

    def verdict(value: float, goal: float, suffix: str = "", steady: bool = True) -> str:
        judged = ("met" if value >= goal else "not met") if steady else "raw unsteady"
        return f"{value:.2f}{suffix} ({judged})"

    moved = {name: around[name] / raw[name] for name in names}
    steady = {name: STEADY[0] <= share <= STEADY[1] for name, share in moved.items()}
    rows = [f"| goal | {' | '.join(names)} |", "| --- |" + " --- |" * len(names)]
    to_raw, to_plain = [], []
    for name in names:
        one = find(results, "service", name, ONE_TEXT)
        peer = find(results, "plain", name, ONE_TEXT)
        assert one is not None and peer is not None
        to_raw.append(verdict(one.texts_per_s / around[name], 1.0, steady=steady[name]))
        to_plain.append(verdict(one.texts_per_s / peer.texts_per_s, 1.25, "x"))
    rows.append(f"| service >= 1.0 x raw onnxruntime (around the runs), {ONE_TEXT} | "
                + " | ".join(to_raw) + " |")  # fmt: skip
    rows.append(f"| service >= 1.25 x plain FastAPI + onnxruntime, {ONE_TEXT} | "
                + " | ".join(to_plain) + " |")  # fmt: skip
    if not all(steady.values()):
        shares = ", ".join(f"{name} {share:.2f}" for name, share in moved.items())
        rows.append(
            f"\nThe machine's speed moved during this run: raw onnxruntime around the runs was "
            f"{shares} of its first figure (steady: {STEADY[0]}-{STEADY[1]}); a ratio "
            "to raw where it moved does not say whether the goal is met."
        )
    met = "met" if idle_gap <= 1.5 else "not met"
    rows.append(f"\nIdle latency: service p50 {idle_gap:+.2f} ms over onnxruntime batch-1 "
                f"(goal within 1.5 ms: {met}).")  # fmt: skip
    return rows


def table_rows(
    results: list[Result], raw: dict[str, float], best: dict[str, int], around: dict[str, float]
) -> list[str]:
    """The results as a markdown table: raw first, the runs, raw around the runs last."""
    table = [
        "| system | workload | scenario | texts/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    table += [
        f"| onnxruntime alone | {n} | best batch {best[n]} | {raw[n]:.0f} | - | - | - |"
        for n in raw
    ]
    table += [r.row() for r in results]
    table += [
        f"| onnxruntime alone | {n} | batch {best[n]}, around the runs | {around[n]:.0f} "
        "| - | - | - |"
        for n in around
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
    parser.add_argument("--seconds", type=float, default=8.0)
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

    model = OnnxRewardModel.load(args.model)
    texts = workloads(model)
    raw: dict[str, float] = {}
    raw_best: dict[str, int] = {}
    print("| system | workload | scenario | texts/s | p50 ms | p95 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, items in texts.items():
        raw_best[name], raw[name] = raw_limit(model, items, args.seconds / 4)
        print(
            f"| onnxruntime alone | {name} | best batch {raw_best[name]} | {raw[name]:.0f} "
            "| - | - | - |",
            flush=True,
        )
    batch1 = batch1_latency_ms(model, texts["short"])

    results: list[Result] = []
    urls = {system: f"http://127.0.0.1:{free_port()}" for system in ("service", "plain")}
    port = {system: url.rsplit(":", 1)[1] for system, url in urls.items()}
    serve = [sys.executable, "-m", "rankrm", "serve", "--model-dir", str(args.model)]
    serve += ["--port", port["service"], "--log-level", "warning", *shlex.split(args.service_args)]
    plain = [sys.executable, str(ROOT / "bench" / "plain_server.py"), str(args.model)]
    servers = [start(serve, urls["service"]), start([*plain, port["plain"]], urls["plain"])]
    # This machine's speed drifts by tens of percent over minutes (shared cores), so for
    # each workload the systems are measured back to back: onnxruntime alone, the service,
    # the plain server, the service's scenario of many texts, onnxruntime alone again; the
    # service/raw ratio divides by the mean of the two raw figures around it.
    around: dict[str, float] = {}
    try:
        idle = measure("service", urls["service"], "short", texts["short"], "idle, 1 client",
                       1, 1, args.seconds)  # fmt: skip
        results.append(idle)
        for name, items in texts.items():
            encodings = by_length(model, items)
            before = raw_rate(model, encodings, raw_best[name], args.seconds / 2)
            for system in ("service", "plain"):
                results.append(
                    measure(system, urls[system], name, items, ONE_TEXT, 1, CLIENTS, args.seconds)
                )
            if not args.quick:
                for system in ("service", "plain"):
                    results.append(
                        measure(system, urls[system], name, items, MANY_TEXTS, 64, 4, args.seconds)
                    )
            after = raw_rate(model, encodings, raw_best[name], args.seconds / 2)
            around[name] = (before + after) / 2
            print(
                f"| onnxruntime alone | {name} | batch {raw_best[name]}, around the runs above "
                f"| {around[name]:.0f} | - | - | - |",
                flush=True,
            )
        peak_rss_mb = peak_rss(servers[0].pid)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    del model
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
    for name in texts:
        one = find(results, "service", name, ONE_TEXT)
        peer = find(results, "plain", name, ONE_TEXT)
        assert one is not None and peer is not None
        line = (
            f"- {name}: service/raw {one.texts_per_s / around[name]:.2f} (raw measured around"
            f" the runs; {one.texts_per_s / raw[name]:.2f} against the first raw figure), "
            f"service/plain {one.texts_per_s / peer.texts_per_s:.2f}x"
        )
        naive_one = find(results, "naive", name, ONE_TEXT)
        if naive_one is not None:
            line += f", service/naive {one.texts_per_s / naive_one.texts_per_s:.2f}x"
        summary.append(line + f" ({ONE_TEXT})")
    summary.append(f"- service peak RSS over the run: {peak_rss_mb:.0f} MB")
    goals = goals_table(results, raw, around, list(texts), idle_gap)
    print("\n".join(summary))
    print("\n".join(goals))
    if args.results is not None:
        table = table_rows(results, raw, raw_best, around)
        report = {"table": table, "summary": summary, "goals": goals,
                  "service_args": args.service_args}  # fmt: skip
        args.results.write_text(json.dumps(report, indent=1) + "\n")
        chart(results, around, args.results.with_suffix(".png"))
    if args.markdown is not None:
        command = " ".join(["python", "bench/serve_bench.py", *sys.argv[1:]])
        write_block(args.markdown, command, args.service_args, table_rows(results, raw, raw_best,
                    around), summary, goals)  # fmt: skip


if __name__ == "__main__":
    main()
