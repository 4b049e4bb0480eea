"""The model's own ceiling, without the service: onnxruntime with one intra-op thread per
caller (as each model worker of the service runs), texts sorted by length, by batch size;
first one caller, then ``--workers`` callers at once on the one session.

    .venv/bin/python bench/model_ceiling.py --model models/default

What the service's token budget is chosen from (docs/benchmarks.md), and the most texts/s
the service's model workers could reach with no HTTP at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import by_length, raw_rate, workloads  # noqa: E402

from rankrm.runtime import OnnxRewardModel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    args = parser.parse_args()
    model = OnnxRewardModel.load(args.model, threads=1, spin=False)
    model.first_batch()
    sizes = [int(s) for s in args.sizes.split(",")]
    texts = workloads(model)
    print(f"| workload | callers | {' | '.join(f'batch {s}' for s in sizes)} |")
    print("| --- | --- |" + " --- |" * len(sizes))
    for name in ("short", "long", "mixed"):
        encodings = by_length(model, texts[name])
        for workers in (1, args.workers):
            rates = [raw_rate(model, encodings, size, args.seconds, workers) for size in sizes]
            cells = " | ".join(f"{rate:.0f}" for rate in rates)
            print(f"| {name} | {workers} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
