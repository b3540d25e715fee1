"""The beam-search backend over the exported graphs: two onnxruntime sessions, numpy arrays, no torch.

Memory is ``(states [R,S,2H], keys [R,K,S], mask [R,S] bool)`` (keys [R,S,K] for bahdanau attention and
in packages exported before keys were transposed); the state is the package's ``decoder_state``
tensors, each with rows first (``state_h [R,L,D]``, ``state_c [R,L,D]``, optionally ``state_feed [R,A]``). The decoder step returns only the top-k scores and ids per row.

With a :class:`~rnnmt.serving.core.shortlist.Shortlist`, the memory also holds each row's set as
``positions [R,L]`` into the batch's union ``vocab [C]``; the union is batch-wide (:class:`BatchWide`),
computed once at encoding and kept as rows leave (a superset does not change any row's result).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.beam_search import Arrays
from rnnmt.serving.core.package import (
    ATTENTION_OUTPUT,
    DECODER_FILE,
    ENCODER_FILE,
    ENCODER_INPUTS,
    MEMORY_NAMES,
    NEXT_PREFIX,
    SHORTLIST_INPUTS,
    STEP_INPUTS,
    STEP_OUTPUTS,
)
from rnnmt.serving.core.shortlist import Shortlist
from rnnmt.tokenizers.sentencepiece import BOS_ID

NO_EXTERNAL_DATA = os.path.join(os.devnull, "no-external-data")
"""A folder that cannot exist (under a file): where a graph's external data files are looked for."""

_LOAD_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
)


def session_options(threads: int) -> ort.SessionOptions:
    """Sequential execution, ``threads`` intra-op threads (0 = onnxruntime's default), all graph optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Lets constant folding turn the DequantizeLinear of int8-weights packages into float32 weights once,
    # at load; without it they are dequantized at every call (about 1.25× slower).
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


def open_session(graph: bytes, path: Path, threads: int) -> ort.InferenceSession:
    """A session of the ONNX model ``graph`` (the verified bytes of ``path``, which only errors name).

    A model loaded from bytes would read its external data files (tensors kept beside the ``.onnx`` file)
    from the working directory: they are looked for in :data:`NO_EXTERNAL_DATA` instead, where none can
    exist, so such a model fails to load rather than use bytes nobody verified."""
    options = session_options(threads)
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", NO_EXTERNAL_DATA)
    try:
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except _LOAD_ERRORS as exc:
        external = " (ONNX external data is not supported)" if "external data" in str(exc).lower() else ""
        raise RnnmtError(f"onnxruntime cannot load {path}{external}: {exc}") from exc


def check_names(path: Path, kind: str, actual: Sequence[str], expected: Sequence[str]) -> None:
    if set(actual) != set(expected):
        raise RnnmtError(
            f"{path} has {kind} {sorted(actual)}, expected {sorted(expected)}: not a graph of this package"
        )


class BatchWide(NamedTuple):
    """A memory array of the whole batch rather than of its rows: :meth:`OnnxBackend.take` keeps it."""

    array: np.ndarray


class OnnxBackend:
    """:class:`~rnnmt.serving.core.beam_search.DecoderBackend` over the bytes of a package's
    ``encoder.onnx`` and ``decoder.onnx`` (the shortlist's graph when ``shortlist`` is given), read from
    the package folder ``root`` (named in errors)."""

    def __init__(
        self,
        encoder_graph: bytes,
        decoder_graph: bytes,
        root: Path,
        state_names: Sequence[str],
        threads: int = 0,
        shortlist: Shortlist | None = None,
        attention: bool = False,
    ) -> None:
        encoder, decoder = root / ENCODER_FILE, root / DECODER_FILE
        self.encoder = open_session(encoder_graph, encoder, threads)
        self.decoder = open_session(decoder_graph, decoder, threads)
        self.state_names = list(state_names)
        self.shortlist = shortlist
        self.memory_names = [*MEMORY_NAMES, *(SHORTLIST_INPUTS if shortlist else ())]
        self.memory_outputs = [*MEMORY_NAMES, *self.state_names]
        self.step_outputs = [*STEP_OUTPUTS, *(NEXT_PREFIX + name for name in self.state_names)]
        check_names(encoder, "inputs", [i.name for i in self.encoder.get_inputs()], ENCODER_INPUTS)
        check_names(encoder, "outputs", [o.name for o in self.encoder.get_outputs()], self.memory_outputs)
        check_names(
            decoder,
            "inputs",
            [i.name for i in self.decoder.get_inputs()],
            [*STEP_INPUTS, *self.memory_names, *self.state_names],
        )
        self.attention = attention
        check_names(
            decoder,
            "outputs",
            [o.name for o in self.decoder.get_outputs()],
            [*self.step_outputs, *([ATTENTION_OUTPUT] if attention else [])],
        )

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[Arrays, Arrays]:
        """src [N,S] int64, lengths [N] int64 → memory (states, keys, mask(, positions, vocab)), initial
        state (rows first)."""
        outputs = self.encoder.run(self.memory_outputs, {"src": src, "src_lengths": lengths})
        memory = tuple(outputs[: len(MEMORY_NAMES)])
        if self.shortlist:
            vocab, positions = self.shortlist.batch(src, lengths)
            memory += (positions, BatchWide(vocab))
        return memory, tuple(outputs[len(MEMORY_NAMES) :])

    def take(self, arrays: Arrays, rows: np.ndarray) -> Arrays:
        return tuple(a if isinstance(a, BatchWide) else a[rows] for a in arrays)

    def step(
        self,
        prev: np.ndarray,
        state: Arrays,
        memory: Arrays,
        beam_scores: np.ndarray,
        eos_bias: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, Arrays]:
        """prev [R] int64, beam_scores [R], eos_bias [R] float32 → scores [R,k], ids [R,k], next state."""
        feeds = self._feeds(prev, state, memory, beam_scores, eos_bias, k)
        scores, ids, *next_state = self.decoder.run(self.step_outputs, feeds)
        return scores, ids, tuple(next_state)

    def _feeds(
        self,
        prev: np.ndarray,
        state: Arrays,
        memory: Arrays,
        beam_scores: np.ndarray,
        eos_bias: np.ndarray,
        k: int,
    ) -> dict[str, np.ndarray]:
        return {
            "prev": prev,
            "beam_scores": beam_scores,
            "eos_bias": eos_bias,
            "k": np.array(k, dtype=np.int64),
            **{
                name: a.array if isinstance(a, BatchWide) else a
                for name, a in zip(self.memory_names, memory, strict=True)
            },
            **dict(zip(self.state_names, state, strict=True)),
        }

    def attention_of(self, source: Sequence[int], target: Sequence[int]) -> np.ndarray:
        """The attention weights [T,S] of the decoder forced through ``target`` (T pieces, EOS not
        included) given ``source`` (S ids, EOS included): row t is where it looked to produce piece t.
        One sentence at a time, so the weights never depend on other sentences."""
        if not self.attention:
            raise RnnmtError("this package's decoder does not output its attention (format 3 does)")
        src = np.array([source], dtype=np.int64)
        memory, state = self.encode(src, np.array([len(source)], dtype=np.int64))
        outputs = [*self.step_outputs, ATTENTION_OUTPUT]
        rows = []
        zeros = np.zeros(1, dtype=np.float32)
        for prev in [BOS_ID, *target][: len(target)]:
            feeds = self._feeds(np.array([prev], dtype=np.int64), state, memory, zeros, zeros, 1)
            _, _, *next_state, weights = self.decoder.run(outputs, feeds)
            rows.append(weights.reshape(-1))
            state = tuple(next_state)
        return np.stack(rows) if rows else np.zeros((0, len(source)), dtype=np.float32)
