"""One batch job split over N machines or containers, and the parts put back together.

Shard K of N (K counted from 1, as in ``split -n l/K/N``) is the K-th of N contiguous ranges of the
input's lines, equal to within one line: lines ``[(K-1)·T//N, K·T//N)`` of T. Contiguous ranges make each
shard's output a plain slice of the whole output, so merging is concatenating them in shard order, and a
shard reads the input only up to its own last line.

:func:`merge` (``rnnmt batch --merge SHARD_OUTPUTS… --out FILE``) checks from their progress files that
the outputs are the N finished shards of one job, whatever order they are given in, then concatenates the
outputs, and the error files, in shard order.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnmt.errors import RnnmtError
from rnnmt.serving.batch.checkpoint import (
    JobState,
    differences,
    errors_path,
    progress_path,
    publish,
    read_state,
    temporary_path,
)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → ``(K, N)`` with 1 ≤ K ≤ N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise RnnmtError(f"--shard must be K/N with 1 ≤ K ≤ N (e.g. 2/4), not {text!r}")
    return int(match[1]), int(match[2])


def shard_range(total: int, shard: tuple[int, int]) -> tuple[int, int]:
    """The input lines ``[start, end)`` of ``shard`` among ``total`` lines."""
    k, n = shard
    return (k - 1) * total // n, k * total // n


def concatenate(parts: Sequence[Path], target: Path) -> None:
    """Write the files ``parts`` one after the other to ``target``, which appears only when complete."""
    with temporary_path(target).open("wb") as f:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, f)
    publish(target)


@dataclass(frozen=True)
class Merged:
    lines: int
    failed: int


def merge(outputs: Sequence[Path], out: Path) -> Merged:
    """Concatenate the finished shard outputs of one job into ``out`` (and their errors beside it)."""
    states: list[tuple[JobState, Path]] = []
    for output in outputs:
        state = read_state(output)
        if state is None:
            raise RnnmtError(f"{output} has no {progress_path(output).name}: it is not a batch job's output")
        if not state.done:
            raise RnnmtError(
                f"{output} is not finished: run its job (shard {state.shard[0]}/{state.shard[1]}) again"
            )
        if out.resolve() == output.resolve():
            raise RnnmtError(f"--out {out} is one of the shard outputs")
        states.append((state, output))
    states.sort(key=lambda item: item[0].shard)
    first = states[0][0]
    for state, output in states[1:]:
        if changed := differences(first.job, state.job):
            raise RnnmtError(f"{output} is from another job than {states[0][1]}: {'; '.join(changed)}")
    n = first.shard[1]
    shards = [state.shard for state, _ in states]
    if shards != [(k, n) for k in range(1, n + 1)]:
        found = ", ".join(f"{k}/{m}" for k, m in shards)
        raise RnnmtError(f"merging needs shards 1/{n} to {n}/{n}, each once; found {found}")
    concatenate([output for _, output in states], out)
    errors = [errors_path(output) for state, output in states if state.errors_bytes]
    if errors:
        concatenate(errors, errors_path(out))
    else:
        errors_path(out).unlink(missing_ok=True)
    return Merged(sum(s.lines for s, _ in states), sum(s.failed for s, _ in states))
