"""The int8-rows graph passes on small graphs, against numpy: per-row quantized MatMuls and the LSTM written
out as MatMuls."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rnnmt.training.quantize import quantize_rows, unroll_lstm


def run(model: onnx.ModelProto, **feeds: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def matmul_graph(weights: np.ndarray) -> onnx.ModelProto:
    k, n = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def rows_reference(a: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-row uint8 (zero point 128) × per-column int8, int32 accumulation, then both scales."""
    w_scale = (np.maximum(np.abs(weights).max(axis=0), 1e-12) / 127).astype(np.float32)
    w_int8 = np.clip(np.rint(weights / w_scale), -127, 127).astype(np.int32)
    a_scale = (np.maximum(np.abs(a).max(axis=1, keepdims=True), 1e-12) / 127).astype(np.float32)
    a_uint8 = np.clip(np.rint(a / a_scale) + 128, 0, 255).astype(np.int32)
    product = (a_uint8 - 128) @ w_int8
    return product.astype(np.float32) * a_scale * w_scale


def test_a_per_row_matmul_matches_numpy_and_each_row_is_its_own() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(64, 48)).astype(np.float32)
    a = (rng.normal(size=(9, 64)) * rng.uniform(0.01, 100, size=(9, 1))).astype(np.float32)
    a[3] = 0.0  # an all-zero row
    model = quantize_rows(matmul_graph(weights))
    assert {n.op_type for n in model.graph.node} >= {"MatMulInteger", "ReduceMax"}
    (batched,) = run(model, a=a)
    np.testing.assert_allclose(batched, rows_reference(a, weights), rtol=1e-6, atol=1e-6)
    alone = np.concatenate([run(model, a=a[i : i + 1])[0] for i in range(len(a))])
    assert np.array_equal(batched, alone)
    assert np.abs(batched - a @ weights).max() < 0.03 * np.abs(a @ weights).max()


def test_small_matrices_stay_float() -> None:
    model = quantize_rows(matmul_graph(np.ones((8, 8), np.float32)))
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


def test_an_lstm_step_written_out_matches_onnxruntime_s_lstm() -> None:
    rng = np.random.default_rng(1)
    inputs, hidden, rows = 5, 7, 4
    w = rng.normal(size=(1, 4 * hidden, inputs)).astype(np.float32)
    r = rng.normal(size=(1, 4 * hidden, hidden)).astype(np.float32)
    b = rng.normal(size=(1, 8 * hidden)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["y", "y_h", "y_c"], hidden_size=hidden
            )
        ],
        "lstm",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "rows", inputs]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "rows", hidden]),
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "rows", hidden]),
        ],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "y_h", "y_c")],
        [numpy_helper.from_array(t, name) for t, name in ((w, "w"), (r, "r"), (b, "b"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {
        "x": rng.normal(size=(1, rows, inputs)).astype(np.float32),
        "h0": rng.normal(size=(1, rows, hidden)).astype(np.float32),
        "c0": rng.normal(size=(1, rows, hidden)).astype(np.float32),
    }
    expected = run(model, **feeds)
    unrolled = unroll_lstm(onnx.ModelProto.FromString(model.SerializeToString()))
    assert "LSTM" not in {n.op_type for n in unrolled.graph.node}
    for want, got in zip(expected, run(unrolled, **feeds), strict=True):
        assert want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
