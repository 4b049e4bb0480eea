"""training/onnx_export.py: the reward model as an ONNX graph with dynamic batch and
sequence axes, scoring as torch does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from training.model import load_reward_model
from training.onnx_export import OPSET, OUTPUT_NAME, export_onnx, optimize_onnx

TEXTS = ["good film", "a very long movie was good and the plot was fine", "bad"]


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (rewards,) = session.run([OUTPUT_NAME], feeds)
    return np.asarray(rewards)


def test_the_graph_takes_any_batch_and_length_and_scores_as_torch(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    rm = load_reward_model(tiny_checkpoint)
    path = tmp_path / "raw.onnx"
    names = export_onnx(rm, path)
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == OPSET
    assert graph.graph.output[0].name == OUTPUT_NAME
    for value in graph.graph.input:  # both axes symbolic: any batch, any length
        assert all(d.dim_param for d in value.type.tensor_type.shape.dim)
    batch = rm.hf_tokenizer(TEXTS, padding=True, return_tensors="np")
    feeds = {n: batch[n].astype(np.int64) for n in names}
    expected = rm.score([None] * len(TEXTS), TEXTS).numpy()
    np.testing.assert_allclose(run(path, feeds), expected, atol=1e-5)
    single = {n: v[:1, : int(batch["attention_mask"][0].sum())] for n, v in feeds.items()}
    np.testing.assert_allclose(run(path, single), expected[:1], atol=1e-5)


def test_bert_graphs_are_fused_and_the_fused_graph_scores_the_same(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    rm = load_reward_model(tiny_checkpoint)
    raw, fused = tmp_path / "raw.onnx", tmp_path / "fused.onnx"
    names = export_onnx(rm, raw)
    assert optimize_onnx(raw, fused, rm.model) is True
    ops = {node.op_type for node in onnx.load(str(fused)).graph.node}
    assert ops & {"Attention", "MultiHeadAttention"}
    assert "LayerNormalization" in ops
    assert "SkipLayerNormalization" not in ops  # slower on CPU than Add + LayerNormalization
    batch = rm.hf_tokenizer(TEXTS, padding=True, return_tensors="np")
    feeds = {n: batch[n].astype(np.int64) for n in names}
    assert run(fused, feeds) == pytest.approx(run(raw, feeds), abs=1e-5)
