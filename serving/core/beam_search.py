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

An n-best list starts with the translation that ``n_best`` 1 gives, whatever ``n_best`` is: the best
finished hypothesis at the step where a search for one would have stopped (its top candidate EOS with
one finished, or its maximum length), then the best of the others found by the end. A hypothesis found
later may score higher than that first one; asking for alternatives never changes the translation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rnnmt.serving.core.options import SearchOptions
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


class BeamSearch:
    """The search of one batch, advanced one decoder step at a time, so that a scheduler can interleave
    batches, and drop sentences (a cancelled request's) between steps without touching the others.

    ``sources`` are source ids (EOS appended, each non-empty); creating the search encodes them. Call
    :meth:`step` until :attr:`done`, then :meth:`results`: per source its ``n_best`` hypotheses, the
    translation of ``n_best`` 1 first, then the best others (none for a dropped source).
    """

    def __init__(self, backend: DecoderBackend, sources: Sequence[Sequence[int]], options: SearchOptions):
        k = options.beam_size
        if not 1 <= options.n_best <= k:
            raise ValueError(f"n_best must be between 1 and beam_size ({k}), not {options.n_best}")
        self.backend, self.options = backend, options
        n = len(sources)
        src, lengths = pad_batch(sources)
        memory, state = backend.encode(src, lengths)
        expand = np.repeat(np.arange(n), k)
        self.memory, self.state = backend.take(memory, expand), backend.take(state, expand)
        self.alive = np.arange(n)  # batch index of each sentence still searched
        self.max_len = np.array([options.max_length(int(x)) for x in lengths])
        self.finished: list[list[Hypothesis]] = [[] for _ in range(n)]
        self.first: list[Hypothesis | None] = [None] * n  # the translation of n_best 1, once known
        self.beam_scores = np.full((n, k), -np.inf, dtype=np.float32)
        self.beam_scores[:, 0] = 0.0  # the first step expands one hypothesis per sentence
        self.history = np.empty((n * k, 0), dtype=np.int64)  # [R,t] output ids so far
        self.prev = np.full(n * k, BOS_ID, dtype=np.int64)  # [R] the last id of each row
        self.t = 0

    @property
    def done(self) -> bool:
        return len(self.alive) == 0

    @property
    def rows(self) -> int:
        """Rows the next step computes: sentences still searched × beam."""
        return len(self.alive) * self.options.beam_size

    def step(self) -> None:
        """One decoder step for every sentence still searched; finished sentences leave the batch."""
        options, k, cands = self.options, self.options.beam_size, self.options.beam_size + 1
        self.t = t = self.t + 1
        n = len(self.alive)
        eos_bias = np.full(n * k, -np.inf if t <= options.min_output_tokens else 0.0, dtype=np.float32)
        top_scores, top_ids, state = self.backend.step(
            self.prev, self.state, self.memory, self.beam_scores.reshape(-1), eos_bias, cands
        )

        # Rank each sentence's K·(K+1) candidates by cumulative log-prob.
        scores = top_scores.reshape(n, k * cands)
        order = np.argsort(-scores, axis=1, kind="stable")
        scores = np.take_along_axis(scores, order, axis=1)
        ids = np.take_along_axis(top_ids.reshape(n, k * cands), order, axis=1)
        src_rows = order // cands + (np.arange(n) * k)[:, None]
        is_eos = ids == EOS_ID

        penalty = length_penalty(t, options.length_penalty)
        for i, c in zip(*np.nonzero(is_eos[:, :k] & np.isfinite(scores[:, :k])), strict=True):
            self.finished[self.alive[i]].append(
                Hypothesis(self.history[src_rows[i, c]].tolist(), float(scores[i, c] / penalty))
            )
        # The best K non-EOS candidates continue (there are always at least K·K of them).
        keep = ~is_eos & (np.cumsum(~is_eos, axis=1) <= k)
        sel = np.nonzero(keep)[1].reshape(n, k)
        self.beam_scores = np.take_along_axis(scores, sel, axis=1)
        prev_rows = np.take_along_axis(src_rows, sel, axis=1)
        self.prev = np.take_along_axis(ids, sel, axis=1).reshape(-1)
        self.history = np.concatenate([self.history[prev_rows.reshape(-1)], self.prev[:, None]], axis=1)

        n_done = np.array([len(self.finished[a]) for a in self.alive])
        at_limit = self.max_len[self.alive] <= t
        for i in np.nonzero(at_limit)[0]:
            self.finished[self.alive[i]].extend(
                Hypothesis(self.history[i * k + b].tolist(), float(self.beam_scores[i, b] / penalty))
                for b in range(k)
            )
        for i in np.nonzero((is_eos[:, 0] & (n_done >= 1)) | at_limit)[0]:  # where n_best 1 would stop
            a = self.alive[i]
            if self.first[a] is None:
                self.first[a] = ranked(self.finished[a])[0]
        done = (is_eos[:, 0] & (n_done >= options.n_best)) | at_limit
        if done.any():  # finished sentences leave: their memory rows, state rows and bookkeeping
            kept = np.nonzero(~done)[0]
            prev_rows = prev_rows[kept]
            self._keep(kept)
        self.state = self.backend.take(state, prev_rows.reshape(-1))

    def drop(self, sources: Sequence[int]) -> None:
        """Stop searching these batch indices: those still searched get no results (a sentence already
        finished keeps its own); the others are unaffected."""
        dropped = np.isin(self.alive, sources)
        for i in self.alive[dropped]:
            self.finished[i], self.first[i] = [], None
        if dropped.any():
            self.state = self.backend.take(self.state, self._keep(np.nonzero(~dropped)[0]))

    def _keep(self, kept: np.ndarray) -> np.ndarray:
        """Keep the sentences at positions ``kept`` of :attr:`alive`: their memory rows and bookkeeping.
        Returns their rows, for the caller to gather the state with."""
        k = self.options.beam_size
        rows = (kept[:, None] * k + np.arange(k)).reshape(-1)
        self.memory = self.backend.take(self.memory, rows)
        self.alive, self.beam_scores = self.alive[kept], self.beam_scores[kept]
        self.prev, self.history = self.prev[rows], self.history[rows]
        return rows

    def results(self) -> list[list[Hypothesis]]:
        n_best, found = self.options.n_best, []
        for first, hyps in zip(self.first, self.finished, strict=True):
            found.append(
                [] if first is None else [first, *(h for h in ranked(hyps) if h is not first)][:n_best]
            )
        return found


def ranked(hypotheses: Sequence[Hypothesis]) -> list[Hypothesis]:
    """Best score first; equal scores in the order they were found."""
    return sorted(hypotheses, key=lambda h: -h.score)


def beam_search(
    backend: DecoderBackend, sources: Sequence[Sequence[int]], options: SearchOptions
) -> list[list[Hypothesis]]:
    """Translate one batch from start to end (see :class:`BeamSearch`)."""
    search = BeamSearch(backend, sources, options)
    while not search.done:
        search.step()
    return search.results()


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
