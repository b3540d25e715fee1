"""Cleaning a parallel corpus as a stream: normalisation, length and ratio limits, exact duplicates (by
64-bit hashes, never the texts) and an optional language check (py3langid), with counts per filter.

Memory stays bounded by the chunk being cleaned plus 8 bytes per distinct pair kept (the hashes, in a
sorted array; recent ones in a set until :data:`MERGE_EVERY` of them are merged in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from rnnmt.errors import RnnmtError
from rnnmt.training.corpus import CHUNK_PAIRS, Pair, normalize

MERGE_EVERY = 1 << 20


@dataclass
class CleanReport:
    """How many pairs cleaning kept and why it dropped the others (each pair counts under the first
    filter that drops it, in this order)."""

    read: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    duplicate: int = 0
    wrong_language: int = 0

    def summary(self) -> str:
        return (
            f"{self.read:,} pairs read, {self.kept:,} kept; dropped {self.empty:,} empty, "
            f"{self.too_long:,} too long, {self.bad_ratio:,} over the length ratio, "
            f"{self.duplicate:,} duplicates, {self.wrong_language:,} in another language"
        )


class SeenHashes:
    """A set of 64-bit hashes that costs 8 bytes per member: a sorted array and a set of recent ones."""

    def __init__(self) -> None:
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._recent: set[int] = set()

    def add_new(self, hashes: list[int]) -> list[bool]:
        """Add ``hashes`` in order; for each, whether it was new (a repeat within ``hashes`` is not)."""
        known = np.zeros(len(hashes), dtype=bool)
        if self._sorted.size and hashes:
            wanted = np.array(hashes, dtype=np.uint64)
            at = np.minimum(np.searchsorted(self._sorted, wanted), self._sorted.size - 1)
            known = self._sorted[at] == wanted
        new = []
        for h, seen in zip(hashes, known.tolist(), strict=True):
            fresh = not seen and h not in self._recent
            if fresh:
                self._recent.add(h)
            new.append(fresh)
        if len(self._recent) >= MERGE_EVERY:
            merged = np.concatenate([self._sorted, np.fromiter(self._recent, np.uint64, len(self._recent))])
            merged.sort()
            self._sorted, self._recent = merged, set()
        return new


def pair_hash(src: str, tgt: str) -> int:
    """64 bits of BLAKE2b of a normalised pair."""
    digest = hashlib.blake2b(f"{src}\t{tgt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class LanguageCheck:
    """Whether a text is in a declared language, as py3langid identifies it among all it knows; a text
    identified as another language with less than ``min_probability`` passes (short texts are often
    misidentified)."""

    def __init__(self, min_probability: float = 0.5) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier: Any = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.known = set(self.identifier.nb_classes)
        self.min_probability = min_probability

    def require(self, *languages: str) -> None:
        """A clear error for a language py3langid does not know."""
        unknown = [lang for lang in languages if lang not in self.known]
        if unknown:
            raise RnnmtError(
                f"language identification does not know {', '.join(unknown)} (it knows {len(self.known)} "
                "languages by their ISO 639-1 codes); leave --langid off for these languages"
            )

    def accepts(self, text: str, language: str) -> bool:
        found, probability = self.identifier.classify(text)
        return found == language or probability < self.min_probability


def clean(
    pairs: Iterable[Pair],
    report: CleanReport,
    max_words: int = 0,
    max_ratio: float = 0.0,
    dedupe: bool = False,
    languages: tuple[str, str] | None = None,
    language_check: LanguageCheck | None = None,
) -> Iterator[Pair]:
    """The pairs that pass, normalised, streamed; ``report`` counts as they go.

    Drops empty pairs, pairs over ``max_words`` words on either side, pairs whose word-count ratio exceeds
    ``max_ratio`` (0 disables a limit), with ``dedupe`` every repeat of a (normalised) pair, and with
    ``languages`` (source, target) a pair whose side ``language_check`` places in another language."""
    seen = SeenHashes() if dedupe else None
    check = None
    if languages is not None:
        check = language_check or LanguageCheck()
        check.require(*languages)
    stream = iter(pairs)
    while chunk := list(islice(stream, CHUNK_PAIRS)):
        report.read += len(chunk)
        passed: list[Pair] = []
        for pair in chunk:
            src, tgt = normalize(pair.src), normalize(pair.tgt)
            ns, nt = len(src.split()), len(tgt.split())
            if not ns or not nt:
                report.empty += 1
            elif max_words and max(ns, nt) > max_words:
                report.too_long += 1
            elif max_ratio and max(ns, nt) / min(ns, nt) > max_ratio:
                report.bad_ratio += 1
            else:
                passed.append(Pair(src, tgt, pair.ref))
        if seen is not None:
            new = seen.add_new([pair_hash(p.src, p.tgt) for p in passed])
            report.duplicate += len(passed) - sum(new)
            passed = [p for p, fresh in zip(passed, new, strict=True) if fresh]
        if check is not None and languages is not None:
            src_lang, tgt_lang = languages
            right = [check.accepts(p.src, src_lang) and check.accepts(p.tgt, tgt_lang) for p in passed]
            report.wrong_language += len(passed) - sum(right)
            passed = [p for p, ok in zip(passed, right, strict=True) if ok]
        report.kept += len(passed)
        yield from passed
