"""A/B of service settings, alternating: every variant is started once, then loaded in
turn, round after round, so the machine's drift (tens of percent over minutes here) falls
on all of them alike. Prints each round and the median per variant.

    .venv/bin/python bench/ab.py --variant base= --variant small='--max-batch-tokens 512'
    .venv/bin/python bench/ab.py --variant a= --variant b='RANKRM_SPIN=true'

A variant is NAME=ARGS: `rankrm serve` flags, and KEY=VALUE words set in its environment.
Only one service is under load at a time; the others sit idle. Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import (  # noqa: E402
    free_port,
    start,
    workloads,
    wrk_load,
)

from rankrm.runtime import OnnxRewardModel  # noqa: E402


def split_variant(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """NAME=ARGS -> (name, serve flags, environment)."""
    name, _, rest = spec.partition("=")
    flags, env = [], {}
    for word in shlex.split(rest):
        key, eq, value = word.partition("=")
        if eq and key.isupper() and not key.startswith("-"):
            env[key] = value
        else:
            flags.append(word)
    return name, flags, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--variant", action="append", required=True, help="NAME=ARGS")
    parser.add_argument(
        "--workloads",
        default="idle,short,long,mixed",
        help="short, long, mixed (WORKLOAD@N: N clients instead of --clients); idle: short@1",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()

    texts = workloads(OnnxRewardModel.load(args.model))
    names = args.workloads.split(",")
    servers, urls = [], {}
    try:
        for spec in args.variant:
            name, flags, env = split_variant(spec)
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "rankrm", "serve", "--model-dir", str(args.model),
                       "--port", str(port), "--log-level", "warning", *flags]  # fmt: skip
            servers.append(start(command, urls[name], {**os.environ, **env}))
        rates: dict[tuple[str, str], list[float]] = {}
        p50s: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for workload in names:
                name_, _, count = ("short@1" if workload == "idle" else workload).partition("@")
                items, clients = texts[name_], int(count or args.clients)
                order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
                for name in order:
                    wrk_load(urls[name], items, 1, clients, 1.0)  # warm-up
                    result = wrk_load(urls[name], items, 1, clients, args.seconds)
                    rates.setdefault((name, workload), []).append(result.texts_per_s)
                    p50s.setdefault((name, workload), []).append(result.p50_ms)
                    print(f"round {round_ + 1} {workload:8} {name:12} {result.texts_per_s:7.0f} "
                          f"texts/s  p50 {result.p50_ms:7.2f} ms", flush=True)  # fmt: skip
        print("\n| variant | " + " | ".join(names) + " |")
        print("| --- |" + " --- |" * len(names))
        for name in urls:
            cells = []
            for workload in names:
                rate = statistics.median(rates[(name, workload)])
                p50 = statistics.median(p50s[(name, workload)])
                cells.append(f"p50 {p50:.2f} ms" if workload == "idle" else f"{rate:.0f}")
            print(f"| {name} | " + " | ".join(cells) + " |")
    finally:
        for server in servers:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
