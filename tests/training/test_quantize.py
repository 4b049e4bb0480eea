"""training/quantize.py: the per-token int8 graph and the fp16 graph, against fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from training.model import load_reward_model
from training.onnx_export import OUTPUT_NAME, export_onnx
from training.onnx_files import save_onnx
from training.quantize import half_precision, quantize_per_token, symmetric_int8

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


def per_token_reference(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The scheme in numpy: int8 rows of x (one scale per row) times int8 columns of w."""
    x_scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-8) / np.float32(127)
    x_q = np.round(x / x_scale).astype(np.int64)
    w_q, w_scale = symmetric_int8(w, axis=0)
    product = (x_q @ w_q.astype(np.int64)) * w_scale.astype(np.float64)
    return np.asarray(product * x_scale + bias)


def test_int8_product_is_the_per_token_scheme_and_batch_invariant() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 24)).astype(np.float32)
    bias = rng.standard_normal(24).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 48])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    quantized, count = quantize_per_token(model)
    assert count == 1
    session = ort.InferenceSession(
        quantized.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = (rng.standard_normal((3, 7, 48)) * 4).astype(np.float32)
    x[1, 2] = 0.0  # an all-zero row keeps a finite scale
    (y,) = session.run(None, {"x": x})
    expected = per_token_reference(x, w, bias)
    assert np.abs(y - expected).max() < 1e-5 * np.abs(expected).max()
    (alone,) = session.run(None, {"x": x[2:3, 3:5]})
    np.testing.assert_array_equal(alone, y[2:3, 3:5])  # a row's output is its own


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
