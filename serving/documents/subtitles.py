"""Subtitles (SubRip ``.srt``, WebVTT ``.vtt``): each cue's lines are translated as one text and put back
on as many lines, broken between words; numbers, timings, cue settings, headers and NOTE/STYLE blocks
come back byte for byte.

Written here rather than with pysubs2, which writes VTT cues without their settings and renumbers
them. A block (lines between blank lines) is a cue when one of its lines is a timing
(``00:01:02,500 --> 00:01:04,000``, ``.`` for VTT, hours optional); the lines after the timing are its
text. Inline markup (``<i>``, ``<b>``, ``{\\an8}``) is left out of what is translated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rnnmt.serving.documents.formats import BadDocument, Document, decode

TIMING = re.compile(r"^\s*(?:\d+:)?\d{1,2}:\d{2}[,.]\d{3}\s+-->\s+(?:\d+:)?\d{1,2}:\d{2}[,.]\d{3}(?:\s.*)?$")
MARKUP = re.compile(r"<[^>\n]*>|\{\\[^}\n]*\}")
BLOCK_BREAK = re.compile(r"(\r?\n(?:[ \t]*\r?\n)+)")


def subtitle_document(data: bytes, name: str) -> Document:
    blocks = BLOCK_BREAK.split(decode(data, name))  # blocks at even places, blank lines between
    cues: list[tuple[int, list[str], int]] = []  # (block index, lines, index of the first text line)
    for b in range(0, len(blocks), 2):
        lines = blocks[b].splitlines()
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # a header, NOTE, STYLE or REGION block
        if not TIMING.match(lines[timing]):
            line = "".join(blocks[:b]).count("\n") + timing + 1
            raise BadDocument(f"{name} line {line}: {lines[timing].strip()!r} is not a cue timing")
        cues.append((b, lines, timing + 1))
    if not cues:
        raise BadDocument(f"{name} has no cues (no 'start --> end' timing line)")
    texts = [
        " ".join(MARKUP.sub("", line).strip() for line in lines[start:]).strip() for _, lines, start in cues
    ]

    def rebuild(translations: Sequence[str]) -> bytes:
        out = list(blocks)
        newline = "\r\n" if "\r\n" in blocks[0] else "\n"
        for (b, lines, start), text in zip(cues, translations, strict=True):
            end = newline if blocks[b].endswith("\n") else ""  # the file's last block
            out[b] = newline.join([*lines[:start], *break_lines(text, len(lines) - start)]) + end
        return "".join(out).encode()

    return Document(texts, rebuild)


def break_lines(text: str, count: int) -> list[str]:
    """``text`` on ``count`` lines (at least one) of about equal length, broken between words."""
    words, lines = text.split(), list[str]()
    for left in range(max(1, count), 0, -1):
        remaining = " ".join(words)
        if left == 1:
            lines.append(remaining)
            break
        target, taken = len(remaining) / left, list[str]()
        while words and (not taken or len(" ".join([*taken, words[0]])) <= target + len(words[0]) / 2):
            taken.append(words.pop(0))
        lines.append(" ".join(taken))
    return lines
