"""Where the cores go while the service is under load: the event loop's thread, the other
threads (the model's), their time waiting for a core and asleep, wrk, and the machine's
idle time. Variants are started and loaded in turn, as in bench/ab.py.

    .venv/bin/python bench/cpu_split.py --variant base= --workloads short,mixed
    .venv/bin/python bench/cpu_split.py --variant old='PYTHONSAFEPATH=1 PYTHONPATH=/tmp/old' \
        --variant new=

(/tmp/old: a ``git worktree`` of another commit; PYTHONSAFEPATH keeps the current folder,
this repository, off the front of the path.)

Figures per thread come from /proc/PID/task/TID/schedstat (Linux): time on a core, time
runnable but waiting for one, and the rest of the wall time (asleep: waiting for work, a
lock or the GIL). In cores: 1.0 is one core for the whole measurement. ``loop us/text``:
the event loop's CPU time for each text scored (one text a request), in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ab import split_variant  # noqa: E402
from serve_bench import free_port, start, workloads, wrk_command, wrk_load  # noqa: E402

from rankrm.runtime import OnnxRewardModel  # noqa: E402

FIELDS = (
    "texts/s",
    "loop us/text",
    "loop",
    "model run",
    "model waiting",
    "model asleep",
    "wrk",
    "idle",
)


def schedstat(pid: int) -> dict[int, tuple[int, int]]:
    """{tid: (ns on a core, ns runnable and waiting)} for each thread of ``pid``."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            run, wait, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:  # the thread ended
            continue
        found[int(tid)] = (int(run), int(wait))
    return found


def cpu_ticks(pid: int) -> int:
    """User and system clock ticks of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def idle_ticks() -> tuple[int, int]:
    """(idle ticks, all ticks) of the machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3], sum(values[:8])


def split(pid: int, url: str, bodies: Path, clients: int, seconds: float) -> dict[str, float]:
    """Load ``url`` with wrk for ``seconds`` and say where the cores went meanwhile."""
    command = wrk_command(url, str(bodies), clients, seconds)
    before, idle_before, started = schedstat(pid), idle_ticks(), time.monotonic()
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    # wrk's own ticks are read just before it exits: poll until its time is nearly up
    while wrk.poll() is None and time.monotonic() - started < round(seconds) - 0.2:
        time.sleep(0.05)
    wrk_ticks = cpu_ticks(wrk.pid) if wrk.poll() is None else 0
    after, idle_after, wall = schedstat(pid), idle_ticks(), time.monotonic() - started
    out, _ = wrk.communicate()
    requests = int(out.split('"requests": ')[1].split(",")[0])
    duration_s = int(out.split('"duration_us": ')[1].split(",")[0]) / 1e6
    ns = wall * 1e9
    moved = {
        tid: (run - before[tid][0], wait - before[tid][1])
        for tid, (run, wait) in after.items()
        if tid in before
    }
    model = [(run, wait) for tid, (run, wait) in moved.items() if tid != pid and run > 0.01 * ns]
    idle, total = idle_after[0] - idle_before[0], idle_after[1] - idle_before[1]
    return {
        "texts/s": requests / duration_s,
        # the loop's time over the window, per text at wrk's rate (the windows differ slightly)
        "loop us/text": 1e6 * moved.get(pid, (0, 0))[0] / ns / max(requests / duration_s, 1e-9),
        "loop": moved.get(pid, (0, 0))[0] / ns,
        "model run": sum(run for run, _ in model) / ns,
        "model waiting": sum(wait for _, wait in model) / ns,
        "model asleep": sum(1 - (run + wait) / ns for run, wait in model),
        "wrk": wrk_ticks / os.sysconf("SC_CLK_TCK") / wall,
        "idle": (os.cpu_count() or 1) * idle / max(total, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--variant", action="append", required=True, help="NAME=ARGS")
    parser.add_argument("--workloads", default="short,long,mixed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()

    texts = workloads(OnnxRewardModel.load(args.model))
    servers, urls = {}, {}
    seen: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        try:
            for spec in args.variant:
                name, flags, env = split_variant(spec)
                port = free_port()
                urls[name] = f"http://127.0.0.1:{port}"
                command = [sys.executable, "-m", "rankrm", "serve", "--model-dir",
                           str(args.model), "--port", str(port), "--log-level", "warning",
                           *flags]  # fmt: skip
                servers[name] = start(command, urls[name], {**os.environ, **env})
            for round_ in range(args.rounds):
                for workload in args.workloads.split(","):
                    bodies = Path(folder) / f"{workload}.jsonl"
                    if not bodies.exists():
                        lines = [json.dumps({"texts": [text]}) for text in texts[workload]]
                        bodies.write_text("\n".join(lines) + "\n")
                    order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
                    for name in order:
                        wrk_load(urls[name], texts[workload], 1, args.clients, 1.0)  # warm-up
                        one = split(servers[name].pid, urls[name], bodies, args.clients,
                                    args.seconds)  # fmt: skip
                        seen.setdefault((name, workload), []).append(one)
                        figures = "  ".join(f"{k} {v:.2f}" for k, v in one.items())
                        print(f"round {round_ + 1} {workload:6} {name:10} {figures}", flush=True)
            print("\nmedians, in cores (texts/s, and the loop's CPU microseconds a text):\n")
            print("| workload | variant | " + " | ".join(FIELDS) + " |")
            print("| --- | --- |" + " --- |" * len(FIELDS))
            for (name, workload), runs in sorted(seen.items(), key=lambda kv: kv[0][::-1]):
                cells = [statistics.median(run[k] for run in runs) for k in FIELDS]
                print(f"| {workload} | {name} | {cells[0]:.0f} | "
                      + " | ".join(f"{c:.2f}" for c in cells[1:]) + " |")  # fmt: skip
        finally:
            for server in servers.values():
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
