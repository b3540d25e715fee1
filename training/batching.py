"""Token-based batches with length bucketing, deterministic per (seed, epoch) so training can resume."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID

Example = tuple[list[int], list[int]]
"""Source ids (EOS appended) and target ids (no BOS/EOS)."""

POOL_BATCHES = 50  # sort this many batches' worth of examples together: similar lengths, still shuffled


def make_batches(examples: Sequence[Example], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices grouped into batches of at most ``batch_tokens`` padded target+source tokens.

    Shuffles, sorts pools by length so batches hold similar lengths, then shuffles the batch order.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    avg = max(1, sum(len(s) + len(t) + 1 for s, t in examples) // max(1, len(examples)))
    pool = max(1, POOL_BATCHES * batch_tokens // avg)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: (len(examples[i][1]), len(examples[i][0])))
        batch: list[int] = []
        longest = 0
        for i in chunk:
            size = len(examples[i][0]) + len(examples[i][1]) + 1
            if batch and max(longest, size) * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, size)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ src [B,S], src_lengths [B], tgt_in [B,T] (BOS + target), tgt_out [B,T] (target + EOS), PAD-padded."""
    src_len = max(len(s) for s, _ in examples)
    tgt_len = max(len(t) for _, t in examples) + 1
    src = torch.full((len(examples), src_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((len(examples), tgt_len), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((len(examples), tgt_len), PAD_ID, dtype=torch.long)
    for i, (s, t) in enumerate(examples):
        src[i, : len(s)] = torch.tensor(s)
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS_ID, *t])
        tgt_out[i, : len(t) + 1] = torch.tensor([*t, EOS_ID])
    lengths = torch.tensor([len(s) for s, _ in examples], dtype=torch.long)
    return src, lengths, tgt_in, tgt_out
