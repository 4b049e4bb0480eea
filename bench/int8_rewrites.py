"""Two rewrites of the default model's per-token int8 graph that could make a model call
cheaper, against the graph as exported: each text's reward (alone, and in batches of 8),
and the time of one call by shape, one thread, sessions alternated, best of ``--rounds``.

    .venv/bin/python bench/int8_rewrites.py [--model models/default] [--rounds 5]

- ``nbits``: every ``MatMulIntegerToFloat`` with its activation quantisation replaced by
  one com.microsoft ``MatMulNBits`` (8-bit weights, the same int8 values and per-channel
  scales, ``block_size`` 128, ``accuracy_level`` 4: activations quantised to int8 by
  onnxruntime, per row and block): one operator a product instead of twelve.
- ``blocked``: the same arithmetic as the export in fewer operators: a per-token
  ``QuantizeLinear`` over the last axis (opset 21 blocked quantisation, one block the width
  of a row) instead of reshaping the activations to rows and back; one zero-point tensor
  shared by all (Shape, ConstantOfShape once instead of 24 times).

The call-time fit (``ms = fixed + per_token x tokens``, least squares over the shapes) says
how much of a call is fixed cost, which smaller graphs could only cut.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from packed_rows import prune  # noqa: E402
from serve_bench import workloads  # noqa: E402

from rankrm.encoding import pad_batch  # noqa: E402
from rankrm.runtime import OnnxRewardModel, make_session  # noqa: E402
from training.quantize import MS_DOMAIN  # noqa: E402

SHAPES = [(1, 3), (1, 10), (1, 20), (1, 40), (2, 20), (4, 20), (8, 20), (16, 20), (4, 128)]


def nbits(model: onnx.ModelProto, block: int = 128) -> onnx.ModelProto:
    """Each per-token int8 product as one MatMulNBits (8 bits, int8 compute)."""
    graph = model.graph
    made = {out: node for node in graph.node for out in node.output}
    weights = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            nodes.append(node)
            continue
        x_q, w_q, _, w_scale, _ = node.input
        x = made[made[x_q].input[1]].input[0]  # Reshape(rows, Shape(x)) -> x
        w = numpy_helper.to_array(weights[w_q]).astype(np.int16)  # (K, N)
        k, n = w.shape
        blocks = k // block
        p = f"nb_{len(nodes)}"
        packed = (w.T + 128).astype(np.uint8).reshape(n, blocks, block)  # (N, K/block, block)
        scales = np.repeat(numpy_helper.to_array(weights[w_scale])[:, None], blocks, axis=1)
        graph.initializer.extend(
            [
                numpy_helper.from_array(packed, f"{p}_b"),
                numpy_helper.from_array(scales, f"{p}_s"),
                numpy_helper.from_array(np.full((n, blocks), 128, np.uint8), f"{p}_zp"),
            ]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits", [x, f"{p}_b", f"{p}_s", f"{p}_zp"], list(node.output),
                domain=MS_DOMAIN, K=k, N=n, bits=8, block_size=block, accuracy_level=4,
            )
        )  # fmt: skip
    del graph.node[:]
    graph.node.extend(nodes)
    prune(graph)
    return model


def blocked(model: onnx.ModelProto) -> onnx.ModelProto:
    """The export's arithmetic with a per-token QuantizeLinear over the last axis (opset 21)."""
    graph = model.graph
    made = {out: node for node in graph.node for out in node.output}
    weights = {init.name: init for init in graph.initializer}
    quantizers = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    replaced = {q.output[0].removesuffix("_rows") for q in quantizers}  # the x_q Reshape's output
    zero_point = helper.make_tensor("zero_point", TensorProto.UINT8, [1], [128])
    nodes: list[onnx.NodeProto] = []
    shared: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.output[0] in replaced:
            continue
        if node.op_type == "ReduceMax":  # opset 18: the axes are an input
            inputs = [node.input[0], "rw_last"]
            node = helper.make_node("ReduceMax", inputs, list(node.output), keepdims=1)
        if node.op_type == "QuantizeLinear":
            rows = made[node.input[0]]  # Reshape(x, (-1, width))
            width = int(numpy_helper.to_array(weights[rows.input[1]])[1])
            scale = node.output[0].removesuffix("_q_rows") + "_scale"  # (.., 1)
            shared = shared or [  # every row scale has the same shape: one zero-point tensor
                helper.make_node("Shape", [scale], ["rw_shape"]),
                helper.make_node("ConstantOfShape", ["rw_shape"], ["rw_zp"], value=zero_point),
            ]
            node = helper.make_node(
                "QuantizeLinear", [rows.input[0], scale, "rw_zp"],
                [node.output[0].removesuffix("_rows")], axis=-1, block_size=width,
            )  # fmt: skip
        nodes.append(node)
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "rw_last"))
    del graph.node[:]
    graph.node.extend(shared + nodes)
    prune(graph)  # also puts the shared zero point after the scale it reads
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 21
    model.ir_version = max(model.ir_version, 10)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = OnnxRewardModel.load(args.model, threads=1)
    texts = model.encode([None] * 64, workloads(model)["mixed"][:64])
    folder = Path(tempfile.mkdtemp())
    paths = {"export": args.model / "model.onnx"}
    for name, rewrite in (("nbits", nbits), ("blocked", blocked)):
        paths[name] = folder / f"{name}.onnx"
        onnx.save(rewrite(onnx.load(paths["export"])), paths[name])
    sessions = {name: make_session(path, threads=1) for name, path in paths.items()}
    names = [i.name for i in sessions["export"].get_inputs()]

    def rewards(name: str, batch: list) -> np.ndarray:
        padded = pad_batch(batch, model.pad_token_id)
        out = np.asarray(sessions[name].run(None, {n: getattr(padded, n) for n in names})[0])
        return out.reshape(len(batch), -1)[:, 0]

    alone = {name: np.concatenate([rewards(name, [t]) for t in texts]) for name in sessions}
    for name in sessions:
        batched = np.concatenate([rewards(name, texts[i : i + 8]) for i in range(0, 64, 8)])
        nodes = len(onnx.load(paths[name]).graph.node)
        print(f"{name:8} {nodes} nodes; batch invariance (max change, alone vs 8) "
              f"{np.abs(batched - alone[name]).max():.3g}; vs the export max "
              f"{np.abs(alone[name] - alone['export']).max():.3g} (reward std "
              f"{alone['export'].std():.3g})")  # fmt: skip
    rng = np.random.default_rng(0)
    feeds = {
        (b, t): {
            "input_ids": rng.integers(1000, 20000, (b, t)),
            "attention_mask": np.ones((b, t), np.int64),
            "token_type_ids": np.zeros((b, t), np.int64),
        }
        for b, t in SHAPES
    }
    best: dict[tuple[str, tuple[int, int]], float] = {}
    for round_ in range(args.rounds):
        order = list(sessions) if round_ % 2 == 0 else list(reversed(sessions))
        for name in order:
            for shape, inputs in feeds.items():
                call = {n: inputs[n] for n in names}
                for _ in range(3):
                    sessions[name].run(None, call)
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < 0.15:
                    sessions[name].run(None, call)
                    calls += 1
                ms = (time.perf_counter() - start) / calls * 1e3
                best[(name, shape)] = min(ms, best.get((name, shape), ms))
    print("\nms a call, one thread, best of", args.rounds, "rounds (batch x tokens):")
    print("| graph | " + " | ".join(f"{b}x{t}" for b, t in SHAPES) + " | fixed ms | ms a token |")
    print("| --- |" + " --- |" * (len(SHAPES) + 2))
    for name in sessions:
        times = [best[(name, shape)] for shape in SHAPES]
        per_token, fixed = np.polyfit([b * t for b, t in SHAPES], times, 1)
        print(f"| {name} | " + " | ".join(f"{ms:.2f}" for ms in times)
              + f" | {fixed:.2f} | {per_token:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
