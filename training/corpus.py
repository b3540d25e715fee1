"""Parallel corpora as files: aligned plain-text files (and TSV) read as streams, splits written whole.

Readers stream in chunks of :data:`CHUNK_PAIRS`, so a corpus of any size passes in bounded memory;
:func:`read_split` gathers a small split (dev, test) into a list.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import islice, zip_longest
from pathlib import Path

from rnnmt.errors import RnnmtError

CHUNK_PAIRS = 20_000
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Pair:
    """One aligned sentence pair; ``ref`` traces it back to its source (e.g. ``Ruth 1:1``)."""

    src: str
    tgt: str
    ref: str = ""


def normalize(text: str) -> str:
    """Unicode NFC with all runs of whitespace folded to one space and the ends stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def read_lines(path: Path) -> list[str]:
    """Lines of a (small) UTF-8 text file without their line ends."""
    return list(read_lines_of([path]))


def read_lines_of(paths: Iterable[Path]) -> Iterator[str]:
    """The lines of each UTF-8 file in turn, streamed, without their line ends (a missing file or a line
    that is not UTF-8 is an :class:`RnnmtError` naming the file and line)."""
    for path in paths:
        try:
            f = path.open("rb")
        except FileNotFoundError as exc:
            raise RnnmtError(f"file not found: {path}") from exc
        with f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    raise RnnmtError(f"{path}:{number} is not UTF-8 text: {exc}") from exc


def read_chunks(paths: Iterable[Path]) -> Iterator[list[tuple[str, ...]]]:
    """Chunks of aligned lines of several files (one tuple per line number); files of different lengths
    are an :class:`RnnmtError` naming them."""
    paths = list(paths)
    streams = [read_lines_of([path]) for path in paths]
    rows = zip_longest(*streams)
    number = 0
    while chunk := list(islice(rows, CHUNK_PAIRS)):
        for offset, row in enumerate(chunk):
            if None in row:
                ended = paths[row.index(None)]
                longer = paths[[cell is not None for cell in row].index(True)]
                lines = number + len(chunk) + sum(1 for _ in rows)
                raise RnnmtError(
                    f"line counts differ: {longer} has {lines:,} lines but {ended} has {number + offset:,}; "
                    "parallel files must be aligned line by line"
                )
        number += len(chunk)
        yield chunk  # no None left in a row


def read_parallel(src: Path, tgt: Path, ids: Path | None = None) -> Iterator[Pair]:
    """The pairs of aligned plain-text files, one sentence per line, streamed; ``ids`` (if it exists)
    holds each pair's reference."""
    paths = [src, tgt, *([ids] if ids is not None and ids.exists() else [])]
    for chunk in read_chunks(paths):
        for row in chunk:
            yield Pair(row[0], row[1], row[2] if len(row) > 2 else "")


def read_tsv(path: Path, src_column: int = 0, tgt_column: int = 1) -> Iterator[Pair]:
    """The pairs of a TSV file's source and target columns, streamed; a line with too few columns is a
    clear error."""
    for number, line in enumerate(read_lines_of([path]), start=1):
        cells = line.split("\t")
        if len(cells) <= max(src_column, tgt_column):
            raise RnnmtError(
                f"{path}:{number}: expected at least {max(src_column, tgt_column) + 1} tab-separated columns"
            )
        yield Pair(cells[src_column], cells[tgt_column], f"{path.name}:{number}")


def split_paths(prefix: Path, src_lang: str, tgt_lang: str) -> tuple[Path, Path, Path]:
    """``<prefix>.<src_lang>``, ``<prefix>.<tgt_lang>``, ``<prefix>.ids``."""
    return (
        prefix.with_name(f"{prefix.name}.{src_lang}"),
        prefix.with_name(f"{prefix.name}.{tgt_lang}"),
        prefix.with_name(f"{prefix.name}.ids"),
    )


def write_split(prefix: Path, pairs: Iterable[Pair], src_lang: str, tgt_lang: str) -> int:
    """Write a split as aligned source and target files and a parallel ``.ids`` file of references,
    streamed; returns the pairs written. Each file is written beside its place and renamed into it once
    all are complete, so an interrupted write leaves the split as it was."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    finals = split_paths(prefix, src_lang, tgt_lang)
    partials = [path.with_name(path.name + ".partial") for path in finals]
    written = 0
    try:
        with ExitStack() as stack:
            files = [stack.enter_context(path.open("w", encoding="utf-8", newline="\n")) for path in partials]
            for pair in pairs:
                for f, text in zip(files, (pair.src, pair.tgt, pair.ref), strict=True):
                    f.write(text + "\n")
                written += 1
        for partial, final in zip(partials, finals, strict=True):
            os.replace(partial, final)
    finally:
        for partial in partials:
            partial.unlink(missing_ok=True)
    return written


def read_split(prefix: Path, src_lang: str, tgt_lang: str) -> list[Pair]:
    """A (small) split as a list."""
    return list(read_parallel(*split_paths(prefix, src_lang, tgt_lang)))
