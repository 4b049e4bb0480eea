"""Texts/s of the export's graphs and of the variants it chose against, one thread, sessions
alternated, texts sorted by length, best of ``--rounds``.

    .venv/bin/python bench/int8_graph.py

All graphs come from the packaged MiniLM backbone with a random reward head (speed does not
depend on training) through the export's own steps (`export_onnx`, `quantize_per_token`,
`optimize_onnx`). Variants:

- residual + layer norm fused into SkipLayerNormalization (the export leaves them unfused);
- the per-token int8 scheme spelled with standard operators (Div, Round, Add, Cast before the
  product; MatMulInteger, Cast, Mul, Mul after it), as the export wrote it until 2026-12-02,
  instead of QuantizeLinear and com.microsoft's MatMulIntegerToFloat.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import by_length, raw_rate, workloads  # noqa: E402

from rankrm.runtime import OnnxRewardModel, make_session  # noqa: E402
from training.model import default_backbone, load_reward_model  # noqa: E402
from training.onnx_export import export_onnx, optimize_onnx  # noqa: E402
from training.onnx_files import save_onnx  # noqa: E402
from training.quantize import quantize_per_token  # noqa: E402


def spelled_out(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (per-token int8) with QuantizeLinear and MatMulIntegerToFloat written as
    the standard operators that compute the same thing."""
    nodes = []
    for node in model.graph.node:
        name = node.output[0]
        if node.op_type == "QuantizeLinear":
            rows, scale, zero_point = node.input
            nodes += [
                helper.make_node("Reshape", [scale, "spelled_column"], [f"{name}_s"]),
                helper.make_node("Div", [rows, f"{name}_s"], [f"{name}_div"]),
                helper.make_node("Round", [f"{name}_div"], [f"{name}_round"]),
                helper.make_node("Add", [f"{name}_round", "spelled_128"], [f"{name}_shift"]),
                helper.make_node("Cast", [f"{name}_shift"], [name], to=TensorProto.UINT8),
            ]
        elif node.op_type == "MatMulIntegerToFloat":
            x_q, w_q, x_scale, w_scale, zero_point = node.input
            nodes += [
                helper.make_node("MatMulInteger", [x_q, w_q, zero_point], [f"{name}_acc"]),
                helper.make_node("Cast", [f"{name}_acc"], [f"{name}_f"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{name}_f", x_scale], [f"{name}_rows"]),
                helper.make_node("Mul", [f"{name}_rows", w_scale], [name]),
            ]
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1, 1], np.int64), "spelled_column"),
            numpy_helper.from_array(np.array(128.0, np.float32), "spelled_128"),
        ]
    )
    return model


def build(tmp: Path) -> dict[str, Path]:
    """The graphs compared, written under ``tmp``."""
    rm = load_reward_model(default_backbone())
    raw = tmp / "raw.onnx"
    export_onnx(rm, raw)
    quantized = tmp / "int8.raw.onnx"
    save_onnx(quantize_per_token(onnx.load(str(raw)))[0], quantized)
    spelled = tmp / "int8-spelled.raw.onnx"
    save_onnx(spelled_out(onnx.load(str(quantized))), spelled)
    written: list[Path] = []

    def optimized(source: Path, fused: bool = False) -> Path:
        written.append(tmp / f"graph{len(written)}.onnx")
        optimize_onnx(source, written[-1], rm.model, skip_layer_norm=fused)
        return written[-1]

    return {
        "fp32, SkipLayerNormalization": optimized(raw, fused=True),
        "fp32 (the export)": optimized(raw),
        "int8, SkipLayerNormalization": optimized(quantized, fused=True),
        "int8, standard operators": optimized(spelled),
        "int8 (the export)": optimized(quantized),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    served = OnnxRewardModel.load(ROOT / "models" / "default", threads=1, spin=False)
    graphs = build(Path(tempfile.mkdtemp()))
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
