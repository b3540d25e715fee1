"""The decoder step's attention weights as an output of its graph (package format 3), so that serving can
align the words of a translation with its source (:mod:`rnnmt.serving.core.alignment`).

The weights are the softmax of the attention module (``/attention/Softmax``, [R,1,S]); the graph
already computes them for its context vector, so exposing them adds an Identity node and an output and
changes nothing else: the step's other outputs are those of the graph before. The same edit serves a
new export and :func:`upgrade_package`, which brings a package of format 1 or 2 to format 3 in place.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.package import (
    ATTENTION_OUTPUT,
    ATTENTION_VERSION,
    DECODER_FILE,
    MANIFEST_FILE,
    file_record,
    read_package,
)
from rnnmt.serving.core.signing import SIGNATURE_FILE


def expose_attention(decoder_path: Path, out: Path | None = None) -> None:
    """Write the decoder step graph at ``decoder_path`` with :data:`ATTENTION_OUTPUT` added to ``out``
    (``decoder_path`` itself unless told)."""
    model = onnx.load(decoder_path)
    graph = model.graph
    found = [node for node in graph.node if node.op_type == "Softmax" and "/attention/" in node.name]
    if len(found) != 1:
        raise RnnmtError(
            f"{decoder_path}: expected one attention softmax in the decoder step, found {len(found)}"
        )
    graph.node.append(helper.make_node("Identity", [found[0].output[0]], [ATTENTION_OUTPUT]))
    graph.output.append(
        helper.make_tensor_value_info(ATTENTION_OUTPUT, TensorProto.FLOAT, ["rows", 1, "src_len"])
    )
    onnx.checker.check_model(model)
    onnx.save(model, out or decoder_path)


def upgrade_package(root: Path) -> bool:
    """Bring the verified package ``root`` to format 3 in place: its decoder exposes its attention and
    the manifest records the new decoder file. Returns False when it already is. A signed package is
    refused (its signature would no longer match): upgrade it, then sign it again."""
    package, _ = read_package(root)
    manifest = package.manifest
    if manifest.has_attention:
        return False
    if (root / SIGNATURE_FILE).exists():
        raise RnnmtError(f"{root} is signed: remove {SIGNATURE_FILE}, upgrade it, then `rnnmt sign` it again")
    decoder, manifest_path = root / DECODER_FILE, root / MANIFEST_FILE
    new_decoder, new_manifest = decoder.with_suffix(".partial"), manifest_path.with_suffix(".partial")
    expose_attention(decoder, new_decoder)
    files = {**manifest.files, DECODER_FILE: file_record(new_decoder)}
    upgraded = dataclasses.replace(manifest, format_version=ATTENTION_VERSION, files=files)
    new_manifest.write_text(upgraded.to_json() + "\n", encoding="utf-8")
    os.replace(new_decoder, decoder)  # until the manifest follows, the package fails its verification
    os.replace(new_manifest, manifest_path)
    return True
