"""Paragraphs and documents as sentences and back: a text is cut into sentences to translate, and the
translations are put back between the original whitespace and line breaks.

Sentences are found by `sentencex <https://github.com/wikimedia/sentencex>`_ (Wikimedia's segmenter:
rule-based, about 300 languages through fallback chains, maintained, and *non-destructive*: its
sentences concatenate back to the input, so no character is lost or moved). It prefers not splitting to
splitting wrongly, which suits translation. A line break always ends a sentence: each line is segmented
on its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sentencex import segment

LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


@dataclass(frozen=True)
class Segmented:
    """A text as ``sentences`` (no surrounding whitespace, never empty) and the ``gaps`` around them:
    ``len(sentences) + 1`` strings of whitespace (line breaks included), the first before the first
    sentence, the last after the last one."""

    sentences: list[str]
    gaps: list[str]

    def join(self, translations: Sequence[str]) -> str:
        """The text with each sentence replaced by its translation, the whitespace as it was."""
        if len(translations) != len(self.sentences):
            raise ValueError(f"{len(translations)} translations for {len(self.sentences)} sentences")
        parts = [self.gaps[0]]
        for translation, gap in zip(translations, self.gaps[1:], strict=True):
            parts += [translation, gap]
        return "".join(parts)


def split_sentences(text: str, language: str) -> Segmented:
    """Cut ``text`` into its sentences (rules of ``language``, an ISO 639 code such as ``es``)."""
    sentences: list[str] = []
    gaps = [""]
    for line in LINE.findall(text):
        pieces = list(segment(language, line)) if line.strip() else [line]
        if "".join(pieces) != line:  # not expected of sentencex; then the line is one sentence
            pieces = [line]
        for piece in pieces:
            core = piece.strip()
            if not core:
                gaps[-1] += piece
                continue
            start = piece.index(core)
            gaps[-1] += piece[:start]
            sentences.append(core)
            gaps.append(piece[start + len(core) :])
    return Segmented(sentences, gaps)
