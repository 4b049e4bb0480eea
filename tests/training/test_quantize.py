"""training/quantize.py: the per-token int8 graph and the fp16 graph, against fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from training.model import load_reward_model
from training.onnx_export import OUTPUT_NAME, export_onnx
from training.onnx_files import save_onnx
from training.quantize import half_precision, quantize_per_token

TEXTS = ["good film", "a very long movie was good and the plot was fine", "bad", "sad ugly"]


def rewards(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], feeds)
    return np.asarray(out)


def graphs(checkpoint: Path, tmp: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rm = load_reward_model(checkpoint)
    raw = tmp / "raw.onnx"
    names = export_onnx(rm, raw)
    batch = rm.hf_tokenizer(TEXTS, padding=True, return_tensors="np")
    return raw, {n: batch[n].astype(np.int64) for n in names}


def test_int8_quantises_the_matrix_products_and_stays_close(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    raw, feeds = graphs(tiny_checkpoint, tmp_path)
    model, count = quantize_per_token(onnx.load(str(raw)))
    assert count > 0
    assert any(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer)
    save_onnx(model, tmp_path / "int8.onnx")
    fp32, int8 = rewards(raw, feeds), rewards(tmp_path / "int8.onnx", feeds)
    # A random head gives rewards close together: the bar is relative to their size.
    assert np.abs(int8 - fp32).max() < 0.02 * np.abs(fp32).max()
    assert not np.array_equal(int8, fp32)  # it did change the arithmetic


def test_fp16_keeps_int64_inputs_and_a_float32_output(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    raw, feeds = graphs(tiny_checkpoint, tmp_path)
    model = half_precision(onnx.load(str(raw)))
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.INT64}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    save_onnx(model, tmp_path / "fp16.onnx")
    half, full = rewards(tmp_path / "fp16.onnx", feeds), rewards(raw, feeds)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=1e-2)
