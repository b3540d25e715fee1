"""Parallel corpora: reading aligned files, normalising text, cleaning, writing splits."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rnnmt.errors import RnnmtError

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


@dataclass
class CleanReport:
    """How many pairs cleaning kept and why it dropped the others."""

    read: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0

    def summary(self) -> str:
        return (
            f"{self.read:,} pairs read, {self.kept:,} kept; dropped {self.empty:,} empty, "
            f"{self.too_long:,} too long, {self.bad_ratio:,} over the length ratio"
        )


def clean(pairs: list[Pair], max_words: int = 0, max_ratio: float = 0.0) -> tuple[list[Pair], CleanReport]:
    """Normalise both sides; drop empty pairs, pairs over ``max_words`` words on either side and pairs
    whose word-count ratio exceeds ``max_ratio`` (0 disables a limit)."""
    report = CleanReport(read=len(pairs))
    kept: list[Pair] = []
    for pair in pairs:
        src, tgt = normalize(pair.src), normalize(pair.tgt)
        ns, nt = len(src.split()), len(tgt.split())
        if not ns or not nt:
            report.empty += 1
        elif max_words and max(ns, nt) > max_words:
            report.too_long += 1
        elif max_ratio and max(ns, nt) / min(ns, nt) > max_ratio:
            report.bad_ratio += 1
        else:
            kept.append(Pair(src, tgt, pair.ref))
    report.kept = len(kept)
    return kept, report


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file without their line ends (a missing file is a clear error)."""
    try:
        with path.open(encoding="utf-8", newline="\n") as f:
            return [line.rstrip("\r\n") for line in f]
    except FileNotFoundError as exc:
        raise RnnmtError(f"file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise RnnmtError(f"{path} is not UTF-8 text: {exc}") from exc


def read_parallel(src_path: Path, tgt_path: Path, ids_path: Path | None = None) -> list[Pair]:
    """Aligned plain-text files, one sentence per line; line counts must match."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise RnnmtError(
            f"line counts differ: {src_path} has {len(src):,} lines but {tgt_path} has {len(tgt):,}; "
            "parallel files must be aligned line by line"
        )
    refs = read_lines(ids_path) if ids_path is not None and ids_path.exists() else [""] * len(src)
    if len(refs) != len(src):
        raise RnnmtError(f"{ids_path} has {len(refs):,} lines but {src_path} has {len(src):,}")
    return [Pair(s, t, r) for s, t, r in zip(src, tgt, refs, strict=True)]


def read_tsv(path: Path, src_column: int = 0, tgt_column: int = 1) -> list[Pair]:
    """A TSV file with source and target columns; a line with too few columns is a clear error."""
    pairs: list[Pair] = []
    for number, line in enumerate(read_lines(path), start=1):
        cells = line.split("\t")
        if len(cells) <= max(src_column, tgt_column):
            raise RnnmtError(
                f"{path}:{number}: expected at least {max(src_column, tgt_column) + 1} tab-separated columns"
            )
        pairs.append(Pair(cells[src_column], cells[tgt_column], f"{path.name}:{number}"))
    return pairs


def split_paths(prefix: Path, src_lang: str, tgt_lang: str) -> tuple[Path, Path, Path]:
    """``<prefix>.<src_lang>``, ``<prefix>.<tgt_lang>``, ``<prefix>.ids``."""
    return (
        prefix.with_name(f"{prefix.name}.{src_lang}"),
        prefix.with_name(f"{prefix.name}.{tgt_lang}"),
        prefix.with_name(f"{prefix.name}.ids"),
    )


def write_split(prefix: Path, pairs: list[Pair], src_lang: str, tgt_lang: str) -> None:
    """Write a split as aligned ``.src``/``.tgt`` files and a parallel ``.ids`` file of references."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for path, lines in zip(
        split_paths(prefix, src_lang, tgt_lang),
        ([p.src for p in pairs], [p.tgt for p in pairs], [p.ref for p in pairs]),
        strict=True,
    ):
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_split(prefix: Path, src_lang: str, tgt_lang: str) -> list[Pair]:
    src, tgt, ids = split_paths(prefix, src_lang, tgt_lang)
    return read_parallel(src, tgt, ids)
