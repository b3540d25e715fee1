"""`rnnmt export`: a checkpoint → a model package (ONNX encoder and decoder step, tokenizers, manifest).

Both graphs are traced with the TorchScript exporter, which turns the packed bidirectional GRU into
ONNX GRU ops with a sequence-length input, so padding is handled exactly as in PyTorch. The decoder
graph is one step of :meth:`Seq2Seq.step` followed by log-softmax, the EOS bias, the beam score and
TopK, so only ``R×k`` numbers per step leave onnxruntime (see :mod:`rnnmt.serving.core.beam_search`).

Every export checks itself: PyTorch and onnxruntime run the same padded sample batch through the
encoder and a few decoder steps, and the export fails if any output differs by more than
:data:`TOLERANCE`. With a quantization the fp32 graphs are checked first; the quantized graphs'
difference is measured and recorded in the manifest, not enforced. Three quantizations
(:mod:`rnnmt.training.quantize`):

- ``int8``: onnxruntime's dynamic quantization of the decoder step (int8 weights, activations
  quantized per call): the fastest, but the activation scales are taken over the whole batch, so a
  sentence's translation can change with the sentences it is batched with.
- ``int8-weights``: the large weights of both graphs stored as int8 with one scale per tensor and
  dequantized once when onnxruntime loads the graph: a package about a quarter of the fp32 size, fp32
  speed, and translations that do not depend on batching.
- ``int8-rows``: the decoder step computed in int8 with per-row activation scales (a row's result
  depends on that row alone), every other large weight stored as in ``int8-weights``.

With a shortlist corpus, the decoder graph is :class:`ShortlistStepGraph` and the package carries the
shortlist's table (:mod:`rnnmt.training.shortlist`).

The package is assembled in a temporary sibling directory and renamed into place at the end, so a
failed export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

import rnnmt
from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.package import (
    ATTENTION_OUTPUT,
    DECODER_FILE,
    ENCODER_FILE,
    ENCODER_INPUTS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MEMORY_NAMES,
    NEXT_PREFIX,
    QUANTIZATIONS,
    SHORTLIST_FILE,
    SHORTLIST_INPUTS,
    SPECIAL_IDS,
    STEP_INPUTS,
    STEP_OUTPUTS,
    Manifest,
    file_record,
)
from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from rnnmt.training.attention import expose_attention
from rnnmt.training.checkpoint import LoadedModel, load_model
from rnnmt.training.model import Seq2Seq
from rnnmt.training.quantize import quantize_graphs
from rnnmt.training.shortlist import SHORTLIST_SIZE, corpus_shortlist
from rnnmt.training.torch_backend import layers_first, rows_first, scored_topk

TOLERANCE = 1e-4
"""Largest absolute difference between PyTorch and onnxruntime outputs (log-probs, scores, states)."""


def state_names(model: Seq2Seq) -> list[str]:
    """Graph names of the decoder state tensors, in the model's order."""
    return ["state_h", "state_c"] + (["state_feed"] if model.config.input_feeding else [])


class EncoderGraph(nn.Module):
    """src [N,S], src_lengths [N] → states [N,S,2H], keys [N,S,K] or [N,K,S] (see
    :meth:`~rnnmt.training.model.Attention.keys`), mask [N,S], h [N,L,D], c [N,L,D](, feed [N,A])."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        states, keys, mask, state = self.model.encode(src, src_lengths)
        return (states, keys, mask, *rows_first(state))


class DecoderStepGraph(nn.Module):
    """One step over R rows: prev [R], beam_scores [R], eos_bias [R], k (scalar), states [R,S,2H],
    keys [R,S,K] or [R,K,S], mask [R,S], then the state (rows first) → topk_scores [R,k], topk_ids [R,k], next state."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        prev: Tensor,
        beam_scores: Tensor,
        eos_bias: Tensor,
        k: Tensor,
        states: Tensor,
        keys: Tensor,
        mask: Tensor,
        *state: Tensor,
    ) -> tuple[Tensor, ...]:
        logits, next_state = self.model.step(prev, layers_first(state), keys, states, mask)
        scores, ids = scored_topk(logits, beam_scores, eos_bias, k)
        return (scores, ids, *rows_first(next_state))


class ShortlistStepGraph(nn.Module):
    """:class:`DecoderStepGraph` over each row's own set of ``L`` target pieces: after the memory come
    positions [R,L] (into vocab) and vocab [C] (the batch's union of sets, sorted, specials first). The
    output layer is computed for ``vocab`` only; each row is normalised over its ``L`` pieces; the top-k
    ids are vocabulary ids."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        prev: Tensor,
        beam_scores: Tensor,
        eos_bias: Tensor,
        k: Tensor,
        states: Tensor,
        keys: Tensor,
        mask: Tensor,
        positions: Tensor,
        vocab: Tensor,
        *state: Tensor,
    ) -> tuple[Tensor, ...]:
        decoder = self.model.decoder
        attentional, next_state = decoder.attentional_step(prev, layers_first(state), keys, states, mask)
        logits = attentional @ decoder.output.weight[vocab].T  # [R,C]
        # The set of a row starts with the special ids, so EOS sits at position EOS_ID as in the vocabulary.
        scores, top = scored_topk(logits.gather(1, positions), beam_scores, eos_bias, k)
        return (scores, vocab[positions.gather(1, top)], *rows_first(next_state))


def sample_sets(rows: int, vocab: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random sorted sets of ``size`` ids holding the special ids [rows, size] int64 (export samples)."""
    specials = np.arange(EOS_ID + 1)
    return np.stack(
        [
            np.sort(
                np.concatenate(
                    [specials, rng.choice(np.arange(EOS_ID + 1, vocab), size - len(specials), False)]
                )
            )
            for _ in range(rows)
        ]
    )


def export_graphs(
    model: Seq2Seq, encoder_path: Path, decoder_path: Path, opset: int, shortlist_size: int | None
) -> None:
    """Trace both graphs on a small padded batch; batch, rows, source length, k (and the shortlist's
    sizes) stay dynamic."""
    names = state_names(model)
    src = torch.tensor([[UNK_ID, UNK_ID, UNK_ID, EOS_ID], [UNK_ID, EOS_ID, PAD_ID, PAD_ID]])
    lengths = torch.tensor([4, 2])
    encoder = EncoderGraph(model).eval()
    decoder = (ShortlistStepGraph if shortlist_size else DecoderStepGraph)(model).eval()
    with torch.no_grad():
        states, keys, mask, *state = encoder(src, lengths)
    rows = {0: "rows"}
    memory_axes = {name: {0: "rows", 1: "src_len"} for name in MEMORY_NAMES}
    memory_axes["keys"] = {0: "rows", model.decoder.attention.keys_src_axis: "src_len"}
    step_args: tuple[Tensor, ...] = (
        torch.full((2,), BOS_ID),
        torch.zeros(2),
        torch.zeros(2),
        torch.tensor(3),
        states,
        keys,
        mask,
    )
    shortlist_names: list[str] = []
    shortlist_axes: dict[str, dict[int, str]] = {}
    if shortlist_size:
        vocab = model.decoder.output.out_features
        step_args += (
            torch.from_numpy(sample_sets(2, vocab, shortlist_size, np.random.default_rng(0))),
            torch.arange(vocab),
        )
        shortlist_names = list(SHORTLIST_INPUTS)
        shortlist_axes = {"positions": {0: "rows", 1: "set"}, "vocab": {0: "union"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about the TorchScript exporter
        torch.onnx.export(
            encoder,
            (src, lengths),
            str(encoder_path),
            dynamo=False,
            opset_version=opset,
            input_names=list(ENCODER_INPUTS),
            output_names=[*MEMORY_NAMES, *names],
            dynamic_axes={"src": {0: "rows", 1: "src_len"}, "src_lengths": rows, **memory_axes}
            | {name: rows for name in names},
        )
        torch.onnx.export(
            decoder,
            (*step_args, *state),
            str(decoder_path),
            dynamo=False,
            opset_version=opset,
            input_names=[*STEP_INPUTS, *MEMORY_NAMES, *shortlist_names, *names],
            output_names=[*STEP_OUTPUTS, *(NEXT_PREFIX + n for n in names)],
            dynamic_axes={n: rows for n in ("prev", "beam_scores", "eos_bias", *names)}
            | memory_axes
            | shortlist_axes
            | {n: {0: "rows", 1: "k"} for n in STEP_OUTPUTS}
            | {NEXT_PREFIX + n: rows for n in names},
        )


def max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest |expected - actual|; infinities must coincide (they count as equal), else ∞."""
    expected, actual = expected.astype(np.float64), actual.astype(np.float64)
    if expected.shape != actual.shape or not np.array_equal(np.isfinite(expected), np.isfinite(actual)):
        return float("inf")
    finite = np.isfinite(expected)
    if not np.array_equal(expected[~finite], actual[~finite]):
        return float("inf")
    return float(np.abs(expected[finite] - actual[finite]).max(initial=0.0))


def measure_graphs(
    model: Seq2Seq, encoder_path: Path, decoder_path: Path, shortlist_size: int | None = None, steps: int = 3
) -> dict[str, float]:
    """Run PyTorch and onnxruntime side by side on a padded sample batch (lengths 7, 1, 4, 6; 3 rows per
    sentence) for the encoder and ``steps`` decoder steps with k = V (with a shortlist: k = L over random
    sets, the union being the whole vocabulary), so every log-prob is compared.

    Returns the largest absolute difference of the encoder outputs and of the decoder scores and states.
    Each side runs on its own outputs, so differences accumulate as they would in a search.
    """
    rng = np.random.default_rng(0)
    vocab = model.decoder.output.out_features
    lengths = np.array([7, 1, 4, 6], dtype=np.int64)
    src = np.zeros((len(lengths), int(lengths.max())), dtype=np.int64)
    for i, n in enumerate(lengths):
        src[i, : n - 1] = rng.integers(EOS_ID + 1, model.encoder.embed.num_embeddings, n - 1)
        src[i, n - 1] = EOS_ID
    src[0, 2] = UNK_ID
    expand = np.repeat(np.arange(len(lengths)), 3)
    encoder_session = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    decoder_session = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in encoder_session.get_outputs()]
    decoder: nn.Module = DecoderStepGraph(model).eval()
    k = np.array(vocab, dtype=np.int64)
    memory = len(MEMORY_NAMES)
    step_names = list(names)
    shortlist: list[np.ndarray] = []
    if shortlist_size:
        decoder, k = ShortlistStepGraph(model).eval(), np.array(shortlist_size, dtype=np.int64)
        shortlist = [sample_sets(len(expand), vocab, shortlist_size, rng), np.arange(vocab, dtype=np.int64)]
        step_names = [*names[:memory], *SHORTLIST_INPUTS, *names[memory:]]

    with torch.no_grad():
        expected = [
            t.numpy() for t in EncoderGraph(model).eval()(torch.from_numpy(src), torch.from_numpy(lengths))
        ]
    actual = encoder_session.run(names, {"src": src, "src_lengths": lengths})
    diffs = {"encoder": max(max_abs_diff(e, a) for e, a in zip(expected, actual, strict=True))}
    expected, actual = [e[expand] for e in expected], [a[expand] for a in actual]

    decoder_diff = 0.0
    step_outputs = [o.name for o in decoder_session.get_outputs() if o.name != ATTENTION_OUTPUT]
    prev = np.full(len(expand), BOS_ID, dtype=np.int64)
    for _ in range(steps):
        beam_scores = -rng.random(len(expand), dtype=np.float32) * 5
        eos_bias = rng.choice(np.array([0.0, -np.inf, -1.5], dtype=np.float32), len(expand))
        step = (prev, beam_scores, eos_bias, k)
        with torch.no_grad():
            inputs = (*step, *expected[:memory], *shortlist, *expected[memory:])
            out = decoder(*(torch.from_numpy(np.asarray(a)) for a in inputs))
        scores, ids, *expected_state = (t.numpy() for t in out)
        feeds = dict(
            zip(
                [*STEP_INPUTS, *step_names],
                [*step, *actual[:memory], *shortlist, *actual[memory:]],
                strict=True,
            )
        )
        ort_scores, ort_ids, *actual_state = decoder_session.run(step_outputs, feeds)
        # Compare per token id, so near-ties ordered differently by the two TopKs do not count.
        full = np.empty((len(scores), vocab), dtype=scores.dtype)
        np.put_along_axis(full, ids, scores, axis=1)
        decoder_diff = max(
            decoder_diff,
            max_abs_diff(np.take_along_axis(full, ort_ids, axis=1), ort_scores),
            *(max_abs_diff(e, a) for e, a in zip(expected_state, actual_state, strict=True)),
        )
        expected = [*expected[:memory], *expected_state]
        actual = [*actual[:memory], *actual_state]
        prev = rng.integers(EOS_ID + 1, vocab, len(expand))
    diffs["decoder"] = decoder_diff
    return diffs


def json_safe(meta: dict[str, Any]) -> dict[str, Any]:
    """The entries of a checkpoint's ``meta`` that strict JSON can hold (tensors, NaN and the like are dropped)."""
    out = {}
    for key, value in meta.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def write_tokenizers(loaded: LoadedModel, root: Path) -> dict[str, str]:
    """One ``joint.spm`` when source and target share the model, else ``source.spm`` and ``target.spm``."""
    src, tgt = loaded.src_tokenizer.model_proto, loaded.tgt_tokenizer.model_proto
    if src == tgt:
        (root / "joint.spm").write_bytes(src)
        return {"source": "joint.spm", "target": "joint.spm"}
    (root / "source.spm").write_bytes(src)
    (root / "target.spm").write_bytes(tgt)
    return {"source": "source.spm", "target": "target.spm"}


def build_package(
    loaded: LoadedModel,
    root: Path,
    quantize: str | None,
    opset: int,
    max_input_tokens: int,
    shortlist_corpus: Path | None = None,
    shortlist_size: int = SHORTLIST_SIZE,
) -> Manifest:
    """Write every package file into ``root`` (an empty directory) and return the manifest written."""
    model = loaded.model.eval()
    encoder_path, decoder_path = root / ENCODER_FILE, root / DECODER_FILE
    shortlist_record = None
    if shortlist_corpus is not None:
        table, pairs = corpus_shortlist(loaded, shortlist_corpus, shortlist_size)
        table.save(root / SHORTLIST_FILE)
        shortlist_record = {
            "file": SHORTLIST_FILE,
            "size": table.size,
            "always": table.always,
            "per_piece": table.lexical.shape[1],
            "built_from": f"{shortlist_corpus.name} ({pairs:,} sentence pairs, eflomal alignment)",
        }
    size = shortlist_record["size"] if shortlist_record else None
    export_graphs(model, encoder_path, decoder_path, opset, size)
    diffs = measure_graphs(model, encoder_path, decoder_path, size)
    worst = max(diffs.values())
    if not worst <= TOLERANCE:
        raise RnnmtError(
            f"export self-check failed: onnxruntime differs from PyTorch by up to {worst:.3g} (encoder "
            f"{diffs['encoder']:.3g}, decoder {diffs['decoder']:.3g}; tolerance {TOLERANCE}); "
            f"try another opset than {opset}"
        )
    verification: dict[str, Any] = {
        "tolerance": TOLERANCE,
        "encoder_max_abs_diff": diffs["encoder"],
        "decoder_max_abs_diff": diffs["decoder"],
    }
    if quantize:
        quantize_graphs(quantize, encoder_path, decoder_path)
        quantized = measure_graphs(model, encoder_path, decoder_path, size)
        if not all(np.isfinite(diff) for diff in quantized.values()):
            raise RnnmtError(f"the {quantize} graphs produce non-finite outputs where PyTorch does not")
        verification |= {
            "checked": "fp32 graphs before quantization",
            "quantized_encoder_max_abs_diff": quantized["encoder"],
            "quantized_decoder_max_abs_diff": quantized["decoder"],
            "quantized": "measured, not enforced",
        }
    expose_attention(decoder_path)
    tokenizers = write_tokenizers(loaded, root)
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,  # 3: the decoder outputs its attention
        rnnmt_version=rnnmt.__version__,
        source_language=loaded.config.data.src_lang,
        target_language=loaded.config.data.tgt_lang,
        model=dataclasses.asdict(loaded.config.model),
        special_ids=dict(SPECIAL_IDS),
        source_vocab_size=loaded.src_tokenizer.vocab_size,
        target_vocab_size=loaded.tgt_tokenizer.vocab_size,
        tokenizers=tokenizers,
        decoder_state=state_names(model),
        opset=opset,
        quantization=quantize,
        max_input_tokens=max_input_tokens,
        decoding=dataclasses.asdict(SearchOptions()),
        verification=verification,
        training=json_safe(loaded.meta),
        evaluation={},
        files={name: file_record(root / name) for name in sorted(os.listdir(root))},
        shortlist=shortlist_record,
    )
    (root / MANIFEST_FILE).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return manifest


def export_package(
    checkpoint: Path,
    out_dir: Path,
    quantize: str | None = None,
    opset: int = 17,
    max_input_tokens: int = 250,
    shortlist_corpus: Path | None = None,
    shortlist_size: int = SHORTLIST_SIZE,
) -> Path:
    """Export ``checkpoint`` to the package directory ``out_dir`` (new or empty); returns ``out_dir``.
    With ``shortlist_corpus`` (a parallel corpus prefix, usually the training split) the package gets a
    lexical shortlist of ``shortlist_size`` pieces per sentence."""
    if quantize not in QUANTIZATIONS:
        raise RnnmtError(
            f"quantize must be one of {[q for q in QUANTIZATIONS if q]} or none, not {quantize!r}"
        )
    if max_input_tokens < 1:
        raise RnnmtError(f"max_input_tokens must be at least 1, not {max_input_tokens}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RnnmtError(f"{out_dir} already exists and is not an empty directory; choose another --out")
    loaded = load_model(checkpoint)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        build_package(loaded, tmp, quantize, opset, max_input_tokens, shortlist_corpus, shortlist_size)
        tmp.chmod(0o755)  # mkdtemp creates it private
        tmp.rename(out_dir)  # replaces an empty out_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
