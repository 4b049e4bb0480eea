"""Why the export leaves residual + layer norm unfused: texts/s of the same graph with
onnxruntime's SkipLayerNormalization and with Add + LayerNormalization, one thread, sessions
alternated, texts sorted by length.

    .venv/bin/python bench/layer_norm_fusion.py [--model models/default]

fp32: the packaged MiniLM backbone (random reward head; speed does not depend on training)
through the export's own `optimize_onnx`, with the fusion on and off. int8: ``--model``'s
graph (exported with the fusion on) as it is, and with each SkipLayerNormalization rewritten
as Add + LayerNormalization.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import onnx
from onnx import helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import by_length, raw_rate, workloads  # noqa: E402

from rankrm.runtime import OnnxRewardModel, make_session  # noqa: E402
from training.model import default_backbone, load_reward_model  # noqa: E402
from training.onnx_export import export_onnx, optimize_onnx  # noqa: E402


def unfuse(src: Path, dst: Path) -> None:
    """``src`` with every SkipLayerNormalization (4 inputs, 1 output) as Add + LayerNorm."""
    graph = onnx.load(str(src))
    nodes = []
    for node in graph.graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        assert len(node.input) == 4 and len(node.output) == 1, node.name
        x, skip, gamma, beta = node.input
        eps = next(a.f for a in node.attribute if a.name == "epsilon")
        total = node.output[0] + "_sum"
        nodes.append(helper.make_node("Add", [x, skip], [total], name=node.name + "_add"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma, beta], [node.output[0]],
                                      name=node.name + "_ln", axis=-1, epsilon=eps))  # fmt: skip
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    onnx.save(graph, str(dst))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    served = OnnxRewardModel.load(args.model, threads=1, spin=False)
    tmp = Path(tempfile.mkdtemp())
    rm = load_reward_model(default_backbone())
    export_onnx(rm, tmp / "raw.onnx")
    optimize_onnx(tmp / "raw.onnx", tmp / "fp32-add-ln.onnx", rm.model)
    optimize_onnx(tmp / "raw.onnx", tmp / "fp32-fused.onnx", rm.model, skip_layer_norm=True)
    unfuse(args.model / "model.onnx", tmp / "int8-add-ln.onnx")
    graphs = {
        "fp32, SkipLayerNormalization": tmp / "fp32-fused.onnx",
        "fp32, Add + LayerNormalization (the export now)": tmp / "fp32-add-ln.onnx",
        "int8, SkipLayerNormalization (models/default)": args.model / "model.onnx",
        "int8, Add + LayerNormalization (models/default rewritten)": tmp / "int8-add-ln.onnx",
    }
    models = {name: replace(served, session=make_session(path, 1, (), False))
              for name, path in graphs.items()}  # fmt: skip
    texts = workloads(served)
    sizes = {"short": 16, "long": 4, "mixed": 8}
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for workload, size in sizes.items():
            encodings = by_length(served, texts[workload])
            for name, model in models.items():
                rates.setdefault((name, workload), []).append(
                    raw_rate(model, encodings, size, args.seconds)
                )
    print("| graph | " + " | ".join(f"{w} (batch {s})" for w, s in sizes.items()) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for name in models:
        cells = [f"{max(rates[(name, w)]):.0f}" for w in sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
