"""The ``--quantize`` passes over an exported package's ONNX graphs, applied in place.

- ``int8-weights``: every large float initializer stored as int8 with one scale per tensor; onnxruntime
  folds them back to float32 at load, so compute (and batch-independence) is fp32's.
- ``int8``: onnxruntime's dynamic quantization of the decoder step; fast, but its activation scales span
  the whole batch, so a sentence's translation can change with what it is batched with.
- ``int8-rows``: the decoder step with per-row int8 activations and per-column int8 weights. Each LSTM
  layer is first written out as MatMuls (:func:`unroll_lstm`: onnxruntime would otherwise keep a float
  LSTM); then each MatMul by a constant weight matrix becomes :func:`rows_matmul`: every row gets its own
  abs-max scale, the product is accumulated exactly in int32 (uint8 × int8, VNNI on AVX-512 CPUs) and
  rescaled. A row's result is a function of that row alone, so results do not depend on batching.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnmt.errors import RnnmtError

MIN_ELEMENTS = 1024
"""Weight matrices smaller than this stay float (quantizing them costs more than it saves)."""


def quantize_graphs(quantize: str, encoder_path: Path, decoder_path: Path) -> None:
    """Apply ``quantize`` (``int8``, ``int8-weights`` or ``int8-rows``) to the package's graphs in place."""
    if quantize == "int8":
        quantize_decoder(decoder_path)
    elif quantize == "int8-rows":
        model = onnx.load(str(decoder_path))
        quantize_rows(unroll_lstm(model))
        onnx.save(model, str(decoder_path))
        quantize_weights(encoder_path)  # what is not computed in int8 is stored as int8 all the same
        quantize_weights(decoder_path)
    else:
        quantize_weights(encoder_path)
        quantize_weights(decoder_path)


def quantize_decoder(decoder_path: Path) -> None:
    """Replace the decoder step by its dynamically int8-quantized version (weights int8, activations
    quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # heavy; only for --quantize

    quantized = decoder_path.with_name("decoder.int8.onnx")
    logging.disable(logging.WARNING)  # quantize_dynamic advises pre-processing on the root logger
    try:
        quantize_dynamic(decoder_path, quantized, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    quantized.replace(decoder_path)


def quantize_weights(graph_path: Path, min_elements: int = MIN_ELEMENTS) -> None:
    """Store every float initializer of at least two dimensions and ``min_elements`` elements as int8
    with one symmetric scale per tensor, followed by a DequantizeLinear node that gives back the
    original name. Computation stays float32 (:mod:`rnnmt.serving.core.onnx_backend` lets onnxruntime fold
    the dequantization into constants at load)."""
    model = onnx.load(str(graph_path))
    graph = model.graph
    kept, dequantize = [], []
    for tensor in graph.initializer:
        if (
            tensor.data_type != onnx.TensorProto.FLOAT
            or len(tensor.dims) < 2
            or np.prod(tensor.dims) < min_elements
        ):
            kept.append(tensor)
            continue
        weights = numpy_helper.to_array(tensor)
        scale = np.float32(max(float(np.abs(weights).max()), 1e-12) / 127)
        quantized = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
        kept += [
            numpy_helper.from_array(quantized, f"{tensor.name}.int8"),
            numpy_helper.from_array(np.array(scale), f"{tensor.name}.scale"),
        ]
        dequantize.append(
            helper.make_node(
                "DequantizeLinear", [f"{tensor.name}.int8", f"{tensor.name}.scale"], [tensor.name]
            )
        )
    nodes = [*dequantize, *graph.node]
    del graph.initializer[:], graph.node[:]
    graph.initializer.extend(kept)
    graph.node.extend(nodes)
    onnx.save(model, str(graph_path))


class GraphEditor:
    """Rewrites a graph node by node: constants and new nodes get names unique to this pass (``prefix``)."""

    def __init__(self, model: onnx.ModelProto, prefix: str) -> None:
        self.model, self.prefix = model, prefix
        self.constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def name(self, base: str) -> str:
        self._count += 1
        return f"{self.prefix}/{base}/{self._count}"

    def const(self, value: np.ndarray | np.generic, base: str = "const") -> str:
        name = self.name(base)
        self.constants[name] = np.asarray(value)
        return name

    def add(self, op: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        output = output or self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def rewrite(self, replace: Callable[[onnx.NodeProto], bool]) -> onnx.ModelProto:
        """Run ``replace`` on every node (it adds the replacement and returns True, or returns False to
        keep the node), then store the new nodes and the constants they use."""
        graph = self.model.graph
        for node in list(graph.node):
            if not replace(node):
                self.nodes.append(node)
        used = {name for node in self.nodes for name in node.input}
        del graph.node[:], graph.initializer[:]
        graph.node.extend(self.nodes)
        graph.initializer.extend(
            numpy_helper.from_array(v, k) for k, v in self.constants.items() if k in used
        )
        return self.model


def unroll_lstm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Write each single-step, forward LSTM node of ``model`` as MatMuls and gates (ONNX gate order
    i, o, f, c): X [1,R,I], initial_h/c [1,R,H] → Y [1,1,R,H], Y_h, Y_c [1,R,H]. Returns ``model``."""
    edit = GraphEditor(model, "unrolled_lstm")
    axis0 = edit.const(np.array([0], np.int64), "axis0")

    def replace(node: onnx.NodeProto) -> bool:
        if node.op_type != "LSTM":
            return False
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("direction", b"forward") != b"forward" or set(attributes) - {
            "hidden_size",
            "direction",
        }:
            raise RnnmtError(f"int8-rows cannot write out the LSTM node {node.name!r}: {sorted(attributes)}")
        inputs = [*node.input, *[""] * (8 - len(node.input))]
        x, w, r, b, _lengths, h0, c0, peepholes = inputs
        if peepholes or not h0 or not c0 or w not in edit.constants or r not in edit.constants:
            raise RnnmtError(f"int8-rows cannot write out the LSTM node {node.name!r}")
        weights, recurrent = edit.constants[w][0], edit.constants[r][0]  # [4H,I], [4H,H]
        hidden = recurrent.shape[1]
        bias = edit.constants[b][0] if b else np.zeros(8 * hidden, np.float32)
        xs, hs, cs = (edit.add("Squeeze", [t, axis0]) for t in (x, h0, c0))
        gates = edit.add(
            "Add",
            [
                edit.add(
                    "Add",
                    [
                        edit.add("MatMul", [xs, edit.const(weights.T.copy(), "lstm_w")]),
                        edit.add("MatMul", [hs, edit.const(recurrent.T.copy(), "lstm_r")]),
                    ],
                ),
                edit.const((bias[: 4 * hidden] + bias[4 * hidden :]).astype(np.float32), "lstm_b"),
            ],
        )
        names = [edit.name(gate) for gate in "iofc"]
        edit.nodes.append(
            helper.make_node("Split", [gates, edit.const(np.array([hidden] * 4, np.int64))], names, axis=1)
        )
        i, o, f, c = names
        cell = edit.add(
            "Add",
            [
                edit.add("Mul", [edit.add("Sigmoid", [f]), cs]),
                edit.add("Mul", [edit.add("Sigmoid", [i]), edit.add("Tanh", [c])]),
            ],
        )
        hidden_state = edit.add("Mul", [edit.add("Sigmoid", [o]), edit.add("Tanh", [cell])])
        y, y_h, y_c = [*node.output, "", "", ""][:3]
        if y:
            edit.add("Unsqueeze", [edit.add("Unsqueeze", [hidden_state, axis0]), axis0], y)
        if y_h:
            edit.add("Unsqueeze", [hidden_state, axis0], y_h)
        if y_c:
            edit.add("Unsqueeze", [cell, axis0], y_c)
        return True

    return edit.rewrite(replace)


def rows_matmul(edit: GraphEditor, a: str, weights: np.ndarray, output: str) -> None:
    """``output`` = a [M,K] · weights [K,N], with a quantized per row (uint8, zero point 128, abs-max
    scale) and weights per column (int8, symmetric); int32 accumulation, then both scales."""
    w_scale = (np.maximum(np.abs(weights).max(axis=0), 1e-12) / 127).astype(np.float32)  # [N]
    w_int8 = np.clip(np.rint(weights / w_scale), -127, 127).astype(np.int8)
    a_max = edit.add("ReduceMax", [edit.add("Abs", [a])], axes=[-1], keepdims=0)  # [M]
    a_scale = edit.add(
        "Div", [edit.add("Max", [a_max, edit.const(np.float32(1e-12))]), edit.const(np.float32(127))]
    )
    zero_points = edit.add("Expand", [edit.const(np.array([128], np.uint8)), edit.add("Shape", [a_scale])])
    a_uint8 = edit.add("QuantizeLinear", [a, a_scale, zero_points], axis=0)  # round half to even, saturate
    product = edit.add(
        "MatMulInteger",
        [a_uint8, edit.const(w_int8, "w_int8"), edit.const(np.uint8(128)), edit.const(np.int8(0))],
    )
    row_scale = edit.add("Unsqueeze", [a_scale, edit.const(np.array([1], np.int64))])  # [M,1]
    rescaled = edit.add("Mul", [edit.add("Cast", [product], to=TensorProto.FLOAT), row_scale])
    edit.add("Mul", [rescaled, edit.const(w_scale, "w_scale")], output)


def quantize_rows(model: onnx.ModelProto, min_elements: int = MIN_ELEMENTS) -> onnx.ModelProto:
    """Make every MatMul of ``model`` by a constant float matrix of at least ``min_elements`` elements a
    :func:`rows_matmul` (inputs of any rank are flattened to rows and back). Returns ``model``."""
    edit = GraphEditor(model, "int8_rows")

    def replace(node: onnx.NodeProto) -> bool:
        weights = edit.constants.get(node.input[1]) if node.op_type == "MatMul" else None
        if weights is None or weights.ndim != 2 or weights.dtype != np.float32 or weights.size < min_elements:
            return False
        a = node.input[0]
        leading = edit.add(
            "Slice",
            [
                edit.add("Shape", [a]),
                edit.const(np.array([0], np.int64)),
                edit.const(np.array([-1], np.int64)),
            ],
        )
        rows = edit.add("Reshape", [a, edit.const(np.array([-1, weights.shape[0]], np.int64))])
        product = edit.name("rows_product")
        rows_matmul(edit, rows, weights, product)
        shape = edit.add("Concat", [leading, edit.const(np.array([weights.shape[1]], np.int64))], axis=0)
        edit.add("Reshape", [product, shape], node.output[0])
        return True

    return edit.rewrite(replace)
