"""Would several texts packed into one row of a call beat splitting a batch into calls of
similar lengths? An experiment on the exported graph; the service does not pack.

    .venv/bin/python bench/packed_rows.py --model models/default

A batch of texts of mixed lengths is split today into calls of similar lengths (little
padding, small calls: about 5 texts a call on SST-5 sentences under 64 one-text
connections). Packed instead, texts share rows: each row holds several texts one after
another, each text sees only itself (a block-diagonal attention mask), its positions count
from 0, and the pooler reads each text's first token. One call of full rows, little
padding.

The model file is rewritten in memory (BERT-style exports of this project, unfused):

* ``position_ids`` (new input, ``(B, S)``) replaces the positions ``0..S-1`` the graph
  made itself;
* ``attention_mask`` carries segment numbers (``1, 2, ...`` for the texts of a row, 0 for
  padding): a token attends to the tokens of its own segment only (one text a row is the
  0/1 mask of today);
* ``pool_index`` (new input, ``(N,)``) is each text's first token in the flattened
  ``(B * S)`` rows; the reward comes out once per text, ``(N,)``.

It prints, for random batches drawn from each workload: the largest difference between a
text's reward packed and alone (both on the rewritten graph; and alone on the rewritten
against the original graph), and texts/s on one thread of the original graph split as the
service splits (``app.grouping.plan_calls``) against the rewritten graph on packed rows,
alternated. ``--align A`` starts each text at a multiple of ``A`` tokens in its row.

Measured 2026-12-03 (docs/benchmarks.md, "Packed rows"): on mixed texts rows of 48 tokens
ran 1.04x to 1.13x the split calls, and no faster on short or long texts; but a text's
int8 reward then moved with its row-mates by up to 0.06-0.17 (0.5-1.4 % of a reward
standard deviation, over the export's 1e-3 bar): onnxruntime's softmax sums a text's
attention in another order at another offset, and per-token int8 rounding magnifies it.
Aligned to 64 tokens it is exact again, and packs nothing. Not taken into the service.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import workloads  # noqa: E402

from app.grouping import plan_calls  # noqa: E402
from rankrm.encoding import Tokens  # noqa: E402
from rankrm.runtime import OnnxRewardModel  # noqa: E402
from training.quantize import replace_nodes  # noqa: E402


def _one(graph: onnx.GraphProto, op: str, where: str) -> onnx.NodeProto:
    found = [n for n in graph.node if n.op_type == op and where in n.name]
    if len(found) != 1:
        raise SystemExit(f"expected one {op} node named *{where}*, found {len(found)}")
    return found[0]


def packable(path: Path) -> onnx.ModelProto:
    """The model at ``path`` rewritten to take packed rows (see the module docstring)."""
    model = onnx.load(str(path))
    graph = model.graph
    hidden = next(
        i.dims[1] for i in graph.initializer if i.name.endswith("position_embeddings.weight")
    )
    graph.input.append(
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"])
    )
    graph.input.append(helper.make_tensor_value_info("pool_index", TensorProto.INT64, ["texts"]))

    positions = _one(graph, "Gather", "position_embeddings/Gather")
    positions.input[1] = "position_ids"

    # The additive mask: 0 where a query may see a key, the float minimum elsewhere.
    old_mask = _one(graph, "Where", "bert/Where_1")
    allowed_value, refused_value = old_mask.input[1], old_mask.input[2]
    graph.initializer.extend(
        [
            helper.make_tensor("pk_axes_q", TensorProto.INT64, [2], [1, 3]),
            helper.make_tensor("pk_axes_k", TensorProto.INT64, [2], [1, 2]),
            helper.make_tensor("pk_zero", TensorProto.INT64, [], [0]),
            helper.make_tensor("pk_flat", TensorProto.INT64, [2], [-1, hidden]),
        ]
    )
    mask_nodes = [
        helper.make_node("Unsqueeze", ["attention_mask", "pk_axes_q"], ["pk_q"]),  # (B,1,S,1)
        helper.make_node("Unsqueeze", ["attention_mask", "pk_axes_k"], ["pk_k"]),  # (B,1,1,S)
        helper.make_node("Equal", ["pk_q", "pk_k"], ["pk_same"]),
        helper.make_node("Greater", ["pk_k", "pk_zero"], ["pk_real"]),
        helper.make_node("And", ["pk_same", "pk_real"], ["pk_allowed"]),
        helper.make_node("Where", ["pk_allowed", allowed_value, refused_value], ["pk_mask"]),
    ]
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old_mask.output[0]:
                node.input[k] = "pk_mask"

    # Each text's first token, from the flattened rows.
    pooler = _one(graph, "Gather", "pooler/Gather")
    states = pooler.input[0]
    pool_nodes = [
        helper.make_node("Reshape", [states, "pk_flat"], ["pk_states"]),
        helper.make_node("Gather", ["pk_states", "pool_index"], [pooler.output[0]], axis=0),
    ]
    graph.node.remove(pooler)
    graph.node.extend(mask_nodes + pool_nodes)
    prune(graph)
    return model


def prune(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads (the old position and mask subgraphs), and
    the initializers only they read; sort the rest so each node follows its inputs."""
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    left = list(graph.node)
    while found := [n for n in left if any(out in needed for out in n.output)]:
        for node in found:
            kept.append(node)
            needed.update(node.input)
            left.remove(node)
    made = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered: list[onnx.NodeProto] = []
    waiting = kept
    while waiting:
        ready = [n for n in waiting if all(i in made for i in n.input)]
        if not ready:
            missing = {i for n in waiting for i in n.input if i not in made}
            raise SystemExit(f"the rewritten graph lacks {sorted(missing)[:5]}")
        for node in ready:
            ordered.append(node)
            made.update(node.output)
            waiting.remove(node)
    replace_nodes(graph, ordered)


def pack(
    encodings: Sequence[Tokens], row: int, pad_id: int, align: int = 1
) -> dict[str, np.ndarray]:
    """Rows of at most ``row`` tokens (or the longest text), texts placed longest first into
    the first row with room; the feed of the rewritten graph."""
    width = max(row, max(len(e.ids) for e in encodings))
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = -(-len(encodings[i].ids) // align) * align  # each text starts at a multiple of align
        slot = next((r for r, left in enumerate(room) if left >= n), None)
        if slot is None:
            rows.append([])
            room.append(width)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= n
    longest = max(width - left for left in room)
    shape = (len(rows), longest)
    ids = np.full(shape, pad_id, dtype=np.int64)
    segments = np.zeros(shape, dtype=np.int64)
    types = np.zeros(shape, dtype=np.int64)
    positions = np.zeros(shape, dtype=np.int64)
    pool = np.zeros(len(encodings), dtype=np.int64)
    for r, members in enumerate(rows):
        start = 0
        for segment, i in enumerate(members, 1):
            e = encodings[i]
            n = len(e.ids)
            ids[r, start : start + n] = e.ids
            types[r, start : start + n] = e.type_ids
            segments[r, start : start + n] = segment
            positions[r, start : start + n] = np.arange(n)
            pool[i] = r * longest + start
            start += n
    return {
        "input_ids": ids,
        "attention_mask": segments,
        "token_type_ids": types,
        "position_ids": positions,
        "pool_index": pool,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--batch", type=int, default=20, help="texts a batch")
    parser.add_argument("--row", type=int, default=64, help="tokens a packed row")
    parser.add_argument("--overhead", type=float, default=11.0, help="split_overhead_tokens")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="short,long,mixed")
    parser.add_argument("--align", type=int, default=1, help="texts start at multiples of")
    args = parser.parse_args()

    model = OnnxRewardModel.load(args.model, threads=1)  # the original graph, one thread
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    packed = ort.InferenceSession(
        packable(args.model / "model.onnx").SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    pad = model.pad_token_id
    rng = random.Random(0)

    def run_split(encodings: Sequence[Tokens]) -> None:
        for call in plan_calls([len(e.ids) for e in encodings], args.overhead):
            model.run_encodings([encodings[i] for i in call])

    def run_packed(encodings: Sequence[Tokens]) -> np.ndarray:
        return np.asarray(
            packed.run(["reward"], pack(encodings, args.row, pad, args.align))[0]
        ).reshape(-1)

    for name, texts in workloads(model).items():
        if name not in args.workloads.split(","):
            continue
        encodings = model.encode([None] * len(texts), texts, parallel=False)
        batches = [rng.sample(encodings, args.batch) for _ in range(args.batches)]
        checked = [e for b in batches[:10] for e in b]
        alone = {id(e): float(run_packed([e])[0]) for e in checked}
        rewrite = max(abs(float(model.run_encodings([e])[0]) - alone[id(e)]) for e in checked)
        worst = max(
            abs(float(r) - alone[id(e)])
            for b in batches[:10]
            for e, r in zip(b, run_packed(b), strict=True)
        )
        fill = statistics.mean(
            float(np.mean(pack(b, args.row, pad, args.align)["attention_mask"] > 0))
            for b in batches
        )
        rates: dict[str, list[float]] = {"split": [], "packed": []}
        for round_ in range(args.rounds):
            ways = [("split", run_split), ("packed", run_packed)]
            for way, run in ways if round_ % 2 == 0 else list(reversed(ways)):
                started = time.perf_counter()
                for b in batches:
                    run(b)
                rates[way].append(args.batch * len(batches) / (time.perf_counter() - started))
        split, packed_rate = (statistics.median(rates[k]) for k in ("split", "packed"))
        print(
            f"{name:6} max |reward difference|: packed vs alone {worst:.2e}, rewritten vs "
            f"original graph {rewrite:.2e}; texts/s on one thread: split {split:.0f}, rows of "
            f"{args.row} ({fill:.0%} real tokens) {packed_rate:.0f} ({packed_rate / split:.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
