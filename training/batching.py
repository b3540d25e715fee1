"""Token-based batches with length bucketing, deterministic per (seed, epoch) so training can resume.

Batches are planned from the corpus's length arrays alone (:class:`rnnmt.training.store.CorpusStore`),
so a plan for 10 M pairs costs arrays of 10 M integers, not Python lists of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID

Example = tuple[list[int], list[int]]
"""Source ids (EOS appended) and target ids (no BOS/EOS)."""

POOL_BATCHES = 50  # sort this many batches' worth of examples together: similar lengths, still shuffled


class Batches:
    """An epoch's batches: ``batches[b]`` is batch b's example indices [n] (int64)."""

    def __init__(self, indices: np.ndarray, bounds: np.ndarray) -> None:
        self.indices = indices  # [N] every example once, batch after batch
        self.bounds = bounds  # [B+1] batch b is indices[bounds[b] : bounds[b + 1]]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, b: int) -> np.ndarray:
        return self.indices[self.bounds[b] : self.bounds[b + 1]]

    def shard(self, rank: int, world: int) -> list[int]:
        """The batch numbers rank ``rank`` of ``world`` trains: every world-th from ``rank``. Planned with
        ``world`` (:func:`make_batches`), every rank gets as many and all of them cover every example
        once; a rank left without one (fewer examples than ranks) trains batch 0 again."""
        return list(range(rank, len(self), world)) or [0]


def make_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    batch_tokens: int,
    seed: int,
    epoch: int,
    world: int = 1,
) -> Batches:
    """src_lengths [N], tgt_lengths [N] (pieces, without EOS/BOS) → batches of at most ``batch_tokens``
    padded source+target tokens (a longer example is a batch alone).

    Shuffles, sorts pools of :data:`POOL_BATCHES` batches' worth of examples by (target, source) length so
    a batch holds similar lengths, then shuffles the batch order. Where the count of batches is not a
    multiple of ``world`` (DDP ranks), the largest batches are halved until it is (or no batch is left
    to halve)."""
    rng = np.random.default_rng([seed, epoch])
    n = len(src_lengths)
    sizes = src_lengths.astype(np.int64) + tgt_lengths + 2  # source + EOS, target + EOS
    order = rng.permutation(n)
    pool = max(1, POOL_BATCHES * batch_tokens // max(1, int(sizes.sum()) // max(1, n)))
    starts: list[int] = []
    for begin in range(0, n, pool):
        chunk = order[begin : begin + pool]
        chunk[:] = chunk[np.lexsort((src_lengths[chunk], tgt_lengths[chunk]))]
        longest = 0
        for position, size in enumerate(sizes[chunk].tolist()):
            longest = max(longest, size)
            if position == 0 or longest * (position - starts[-1] + begin + 1) > batch_tokens:
                starts.append(begin + position)
                longest = size
    while len(starts) % world:
        sizes_now = np.diff([*starts, n])
        largest = int(np.argmax(sizes_now))
        if sizes_now[largest] < 2:
            break
        starts.insert(largest + 1, starts[largest] + int(sizes_now[largest]) // 2)
    bounds = np.array([*starts, n], dtype=np.int64)
    shuffled = rng.permutation(len(starts))
    lengths = np.diff(bounds)[shuffled]
    indices = np.concatenate([order[bounds[b] : bounds[b + 1]] for b in shuffled]) if n else order
    return Batches(indices, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def collate(
    examples: Sequence[Example], pad_to: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ src [B,S], src_lengths [B], tgt_in [B,T] (BOS + target), tgt_out [B,T] (target + EOS), PAD-padded
    with S and T rounded up to multiples of ``pad_to`` (fewer distinct shapes for the allocator)."""
    src_len = -(-max(len(s) for s, _ in examples) // pad_to) * pad_to
    tgt_len = -(-(max(len(t) for _, t in examples) + 1) // pad_to) * pad_to
    src = torch.full((len(examples), src_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((len(examples), tgt_len), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((len(examples), tgt_len), PAD_ID, dtype=torch.long)
    for i, (s, t) in enumerate(examples):
        src[i, : len(s)] = torch.tensor(s)
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS_ID, *t])
        tgt_out[i, : len(t) + 1] = torch.tensor([*t, EOS_ID])
    lengths = torch.tensor([len(s) for s, _ in examples], dtype=torch.long)
    return src, lengths, tgt_in, tgt_out
