"""A lexical shortlist: each sentence's own set of likely target pieces, so that a decoder step computes
the output layer only for the batch's union of sets and normalises each row over its own sentence's set.

The table (``shortlist.npz`` in a package, plain numpy arrays, no pickles; built at export by
:mod:`rnnmt.training.shortlist`):

- ``lexical [Vs, n] int32``: per source piece, its likeliest target pieces by word alignment, best first
  (``-1`` pads rows with fewer);
- ``frequent [Vt-4] int32``: every non-special target piece, most frequent in the training corpus first;
- ``always`` (scalar): how many of the most frequent pieces every set holds;
- ``size`` (scalar): ``L``, the size of every sentence's set.

A sentence's set is built in this order of priority and cut at exactly ``L`` ids: the four special ids,
the ``always`` most frequent pieces, the lexical candidates of its distinct source pieces (rank 0 of each,
then rank 1, ...), then the remaining pieces by frequency. It is a function of the sentence alone, and
sorted, so the special ids take positions 0..3 (EOS keeps position ``EOS_ID``). Every row is normalised
over exactly ``L`` numbers in the same order whatever it is batched with: results do not depend on
batching.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import MAX_BEAM_SIZE
from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SPECIALS = np.array(sorted((PAD_ID, UNK_ID, BOS_ID, EOS_ID)), dtype=np.int64)


@dataclass(frozen=True)
class Shortlist:
    lexical: np.ndarray  # [Vs, n] int32, -1 padded
    frequent: np.ndarray  # [Vt-4] int32
    always: int
    size: int  # L

    def check(self, source_vocab_size: int, target_vocab_size: int, where: str) -> Shortlist:
        """Refuse a table that does not fit the package's vocabularies; returns ``self``."""
        vt = target_vocab_size
        problems = []
        if self.lexical.ndim != 2 or self.lexical.shape[0] != source_vocab_size:
            problems.append(f"lexical has shape {self.lexical.shape}, expected [{source_vocab_size}, n]")
        elif self.lexical.size and not ((self.lexical >= -1) & (self.lexical < vt)).all():
            problems.append("lexical holds ids outside the target vocabulary")
        expected = np.arange(len(SPECIALS), vt)
        if self.frequent.shape != expected.shape or not np.array_equal(np.sort(self.frequent), expected):
            problems.append("frequent is not a permutation of the non-special target ids")
        if not 0 <= self.always <= len(self.frequent):
            problems.append(f"always {self.always} is out of range")
        if not MAX_BEAM_SIZE < self.size <= vt:  # a step takes the top beam_size + 1 of each row
            problems.append(f"size {self.size} is not between {MAX_BEAM_SIZE + 1} and {vt}")
        if problems:
            raise RnnmtError(f"{where} is not a valid shortlist for this package: {'; '.join(problems)}")
        return self

    @classmethod
    def load(cls, data: bytes, path: Path) -> Shortlist:
        """The table of ``data``, the bytes of ``shortlist.npz`` read from ``path``; a damaged or foreign
        file is an :class:`RnnmtError` naming ``path``."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                return cls(
                    lexical=arrays["lexical"].astype(np.int64),
                    frequent=arrays["frequent"].astype(np.int64),
                    always=int(arrays["always"]),
                    size=int(arrays["size"]),
                )
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
            raise RnnmtError(f"{path} is not a shortlist table: {exc}") from exc

    def save(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(
                f,
                lexical=self.lexical.astype(np.int32),
                frequent=self.frequent.astype(np.int32),
                always=np.int64(self.always),
                size=np.int64(self.size),
            )

    def candidates(self, source: Sequence[int] | np.ndarray) -> np.ndarray:
        """Source ids of one sentence → its set: ``L`` sorted target ids [L] int64."""
        pieces = np.unique(np.asarray(source, dtype=np.int64))
        lexical = self.lexical[pieces].T.reshape(-1)  # rank-major: rank 0 of every piece, then rank 1, ...
        priority = np.concatenate(
            [SPECIALS, self.frequent[: self.always], lexical[lexical >= 0], self.frequent[self.always :]]
        )
        _, first = np.unique(priority, return_index=True)
        return np.sort(priority[np.sort(first)[: self.size]])

    def batch(self, src: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """src [N,S] int64 (padded), lengths [N] → the union of the sets vocab [C] int64 (sorted) and
        each sentence's set as positions in it [N,L] int64."""
        sets = np.stack([self.candidates(row[:n]) for row, n in zip(src, lengths, strict=True)])
        vocab = np.unique(sets)
        return vocab, np.searchsorted(vocab, sets)

    def coverage(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> float:
        """The share of target pieces (of every pair, EOS included) that are in their sentence's set."""
        inside = total = 0
        for source, target in zip(sources, targets, strict=True):
            wanted = np.asarray([*target, EOS_ID], dtype=np.int64)
            inside += int(np.isin(wanted, self.candidates([*source, EOS_ID])).sum())
            total += len(wanted)
        return inside / max(total, 1)
