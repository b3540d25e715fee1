"""Word alignment from the decoder's attention: for each word of a translation, the source word it was
produced from, so that markup around source words can be put around their translations.

The decoder is forced through the translation's pieces (:meth:`~rnnmt.serving.core.onnx_backend
.OnnxBackend.attention_of`, one sentence at a time): the attention [T,S] of each target piece over the
source pieces is summed per word on both sides (a word: a run of word characters, or one punctuation
mark), and each target word is linked to the source word it paid most attention to. Attention is a soft,
approximate alignment (it often looks one piece ahead or behind); README.md says how well tags land.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[tuple[int, int]]:
    """The spans of ``text``'s words: runs of word characters, and each other character but whitespace."""
    return [match.span() for match in WORD.finditer(text)]


def word_of_pieces(spans: Sequence[tuple[int, int]], word_spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """[P, W] 0/1: which words each piece (its character span) covers part of."""
    out = np.zeros((len(spans), len(word_spans)), dtype=np.float32)
    for p, (a, b) in enumerate(spans):
        for w, (start, end) in enumerate(word_spans):
            if start < b and a < end:
                out[p, w] = 1.0
    return out


@dataclass(frozen=True)
class Alignment:
    """The words of a source sentence and of its translation (character spans in each), and per target
    word the index of the source word it was translated from (-1: none found)."""

    source_words: list[tuple[int, int]]
    target_words: list[tuple[int, int]]
    links: list[int]


def align(
    attention: np.ndarray,
    source: str,
    source_spans: Sequence[tuple[int, int]],
    target: str,
    target_spans: Sequence[tuple[int, int]],
) -> Alignment:
    """The alignment of ``target`` to ``source`` given the attention [T,S] of the target's pieces
    (``target_spans``, T of them) over the source's pieces (``source_spans``; the columns beyond them,
    EOS, are not words)."""
    source_words, target_words = words(source), words(target)
    to_source = word_of_pieces(source_spans, source_words)  # [S', Ws]
    to_target = word_of_pieces(target_spans, target_words)  # [T, Wt]
    mass = to_target.T @ attention[:, : len(source_spans)] @ to_source  # [Wt, Ws]
    links = [int(row.argmax()) if row.any() else -1 for row in mass] if source_words else [-1] * len(mass)
    return Alignment(source_words, target_words, links)
