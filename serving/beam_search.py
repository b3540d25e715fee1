"""Batched beam search over any decoder backend: onnxruntime in serving, PyTorch in evaluation.

The search keeps only bookkeeping in numpy; everything per-vocabulary (log-softmax, adding the running
beam scores, top-k) happens inside the backend's step, so only ``R×k`` numbers per step come back.

Layout: a batch of N sentences with beam K has ``R = N·K`` rows, sentence-major (row ``i·K + b`` is beam
b of sentence i). The encoder memory is expanded by K once and never reordered: the beams of a sentence
share rows, so only the recurrent state is gathered each step. Rows of finished sentences are dropped.

The rule (shared by every backend, so the ONNX engine and the PyTorch reference agree): at step t each
row proposes its best K+1 continuations; a sentence's candidates are ranked by cumulative log-prob.
EOS among the top K finishes a hypothesis (scored by log-prob / GNMT length penalty); the best K
non-EOS candidates continue. A sentence is done when its top candidate is EOS and it has n_best finished
hypotheses, or at its maximum length, when the surviving hypotheses are finished as they stand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID

Arrays = tuple[Any, ...]
"""A backend's tensors (numpy arrays, torch tensors), each with rows on axis ``row_axis``."""


class DecoderBackend(Protocol):
    """What a model must offer to be searched. ``Memory`` and ``State`` are opaque tuples of tensors."""

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[Arrays, Arrays]:
        """src [N,S] int64 (PAD_ID-padded), lengths [N] int64 → (memory, initial decoder state)."""

    def take(self, arrays: Arrays, rows: np.ndarray) -> Arrays:
        """Gather rows (int64 indices) of every tensor: expands, reorders and drops rows."""

    def step(
        self,
        prev: np.ndarray,
        state: Arrays,
        memory: Arrays,
        beam_scores: np.ndarray,
        eos_bias: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, Arrays]:
        """prev [R] int64, beam_scores [R] float32, eos_bias [R] float32 (added to EOS's log-prob) →
        top-k scores [R,k] float32 (beam score + log-prob), top-k token ids [R,k] int64, next state."""


@dataclass(frozen=True)
class SearchOptions:
    """Decoding settings; a batch is searched with one set of options."""

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0  # GNMT α: score / ((5 + length) / 6) ** α; 0 = raw log-prob
    max_output_tokens: int = 256  # absolute cap on output pieces (EOS included)
    max_length_ratio: float = 2.0  # and at most ratio × source length + 10
    min_output_tokens: int = 0  # EOS is blocked before this many pieces

    def max_length(self, src_length: int) -> int:
        return max(1, min(self.max_output_tokens, int(self.max_length_ratio * src_length) + 10))


@dataclass(frozen=True)
class Hypothesis:
    """Output token ids (no BOS/EOS) and the length-normalised log-prob score."""

    tokens: list[int]
    score: float


def length_penalty(length: int | np.ndarray, alpha: float) -> float | np.ndarray:
    return ((5.0 + length) / 6.0) ** alpha


def pad_batch(sources: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id sequences → src [N,S] int64 padded with PAD_ID, lengths [N] int64."""
    lengths = np.array([len(s) for s in sources], dtype=np.int64)
    src = np.full((len(sources), max(1, int(lengths.max(initial=1)))), PAD_ID, dtype=np.int64)
    for i, seq in enumerate(sources):
        src[i, : len(seq)] = seq
    return src, lengths


def beam_search(
    backend: DecoderBackend, sources: Sequence[Sequence[int]], options: SearchOptions
) -> list[list[Hypothesis]]:
    """Translate one batch. ``sources`` are source ids (EOS appended, each non-empty).

    Returns per source its ``n_best`` hypotheses, best first.
    """
    k = options.beam_size
    if not 1 <= options.n_best <= k:
        raise ValueError(f"n_best must be between 1 and beam_size ({k}), not {options.n_best}")
    n = len(sources)
    src, lengths = pad_batch(sources)
    memory, state = backend.encode(src, lengths)
    expand = np.repeat(np.arange(n), k)
    memory, state = backend.take(memory, expand), backend.take(state, expand)

    alive = np.arange(n)  # original index of each sentence still searched
    max_len = np.array([options.max_length(int(x)) for x in lengths])
    finished: list[list[Hypothesis]] = [[] for _ in range(n)]
    beam_scores = np.full((n, k), -np.inf, dtype=np.float32)
    beam_scores[:, 0] = 0.0  # the first step expands one hypothesis per sentence
    history = np.empty((n * k, 0), dtype=np.int64)
    prev = np.full(n * k, BOS_ID, dtype=np.int64)
    cands = k + 1

    for t in range(1, int(max_len.max()) + 1):
        rows = len(alive) * k
        eos_bias = np.full(rows, -np.inf if t <= options.min_output_tokens else 0.0, dtype=np.float32)
        top_scores, top_ids, state = backend.step(
            prev, state, memory, beam_scores.reshape(-1), eos_bias, cands
        )

        # Rank each sentence's K·(K+1) candidates by cumulative log-prob.
        scores = top_scores.reshape(len(alive), k * cands)
        order = np.argsort(-scores, axis=1, kind="stable")
        scores = np.take_along_axis(scores, order, axis=1)
        ids = np.take_along_axis(top_ids.reshape(len(alive), k * cands), order, axis=1)
        src_rows = order // cands + (np.arange(len(alive)) * k)[:, None]
        is_eos = ids == EOS_ID

        for i, c in zip(*np.nonzero(is_eos[:, :k] & np.isfinite(scores[:, :k])), strict=True):
            finished[alive[i]].append(
                Hypothesis(
                    history[src_rows[i, c]].tolist(),
                    float(scores[i, c] / length_penalty(t, options.length_penalty)),
                )
            )
        # The best K non-EOS candidates continue (there are always at least K·K of them).
        keep = ~is_eos & (np.cumsum(~is_eos, axis=1) <= k)
        sel = np.nonzero(keep)[1].reshape(len(alive), k)
        beam_scores = np.take_along_axis(scores, sel, axis=1)
        prev_rows = np.take_along_axis(src_rows, sel, axis=1)
        prev = np.take_along_axis(ids, sel, axis=1).reshape(-1)
        history = np.concatenate([history[prev_rows.reshape(-1)], prev[:, None]], axis=1)

        n_done = np.array([len(finished[a]) for a in alive])
        at_limit = max_len[alive] <= t
        for i in np.nonzero(at_limit)[0]:
            penalty = length_penalty(t, options.length_penalty)
            finished[alive[i]].extend(
                Hypothesis(history[i * k + b].tolist(), float(beam_scores[i, b] / penalty)) for b in range(k)
            )
        done = (is_eos[:, 0] & (n_done >= options.n_best)) | at_limit
        if done.all():
            break
        if done.any():  # drop finished sentences: their memory rows, state rows and bookkeeping
            keep = np.nonzero(~done)[0]
            keep_rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
            memory = backend.take(memory, keep_rows)
            prev_rows, alive, beam_scores = prev_rows[keep], alive[keep], beam_scores[keep]
            prev, history = prev[keep_rows], history[keep_rows]
        state = backend.take(state, prev_rows.reshape(-1))

    return [sorted(hyps, key=lambda h: -h.score)[: options.n_best] for hyps in finished]


def search_sorted(
    backend: DecoderBackend, sources: Sequence[Sequence[int]], options: SearchOptions, max_batch_rows: int
) -> list[list[Hypothesis]]:
    """Search any number of sources: sorted by length, cut into batches of at most ``max_batch_rows`` rows
    (sentences × beam), results returned in input order."""
    per_batch = max(1, max_batch_rows // options.beam_size)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[list[Hypothesis]] = [[] for _ in sources]
    for start in range(0, len(order), per_batch):
        chunk = order[start : start + per_batch]
        for i, hyps in zip(chunk, beam_search(backend, [sources[i] for i in chunk], options), strict=True):
            results[i] = hyps
    return results
