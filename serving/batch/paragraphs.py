"""Plain-text documents for `rnnmt batch --paragraphs`: paragraphs separated by blank lines, hard-wrapped
or not, translated whole and written back in the document's layout.

A paragraph is a run of non-blank lines. Its line breaks are soft — a hard-wrapped sentence goes on
over the next line — except before a list item: a line whose text starts with a list marker (``-``,
``*``, ``+``, ``•``, ``1.``, ``1)``, then a space) starts a new *block*. Each block is one text to
translate: its lines joined by single spaces, without the first line's indentation and marker. The
backend translates it sentence by sentence (``split_sentences``), and the block is written back like the
original:

- a block of one line stays one line, however long its translation;
- a block of several lines is wrapped (:mod:`textwrap`, at spaces only) to the width of its longest
  line, the first line with the original indentation and marker, the others with the second line's
  indentation.

Blank lines, whitespace-only ones included, are copied as they are, so paragraphs stay apart. A block
the model refuses, or with a line that is not UTF-8, is copied untranslated (invalid bytes as U+FFFD) and
listed in the errors file with the reason, by its first line.
"""

from __future__ import annotations

import re
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from rnnmt.serving.batch.backends import Backend
from rnnmt.serving.batch.chunk import ChunkResult, RetryPolicy, translate_texts

MARKER = re.compile(r"\s*(?:[-*+•]|\d{1,3}[.)])\s+(?=\S)")


def indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def starts_block(previous: str, line: str) -> bool:
    """Whether ``line``, after ``previous`` (the line before it; "" at the start), starts a block."""
    return bool(line.strip()) and (not previous.strip() or MARKER.match(line) is not None)


@dataclass(frozen=True)
class Block:
    """A list item or a paragraph without list items: ``lines[first : first + len(lines)]`` of a chunk."""

    first: int
    lines: list[str]

    @property
    def prefix(self) -> str:
        """The first line's indentation, and its list marker with the spaces after it."""
        marker = MARKER.match(self.lines[0])
        return marker[0] if marker else indentation(self.lines[0])

    @property
    def text(self) -> str:
        """What to translate: the lines joined by single spaces, without the prefix."""
        return " ".join(
            [self.lines[0][len(self.prefix) :].strip(), *(line.strip() for line in self.lines[1:])]
        )

    def render(self, translation: str) -> list[str]:
        """The output lines of this block, given the translation of its :attr:`text`."""
        if len(self.lines) == 1:
            return [self.prefix + translation]
        return textwrap.wrap(
            translation,
            max(len(line.rstrip()) for line in self.lines),
            initial_indent=self.prefix,
            subsequent_indent=indentation(self.lines[1]),
            break_long_words=False,
            break_on_hyphens=False,
        ) or [self.prefix.rstrip()]


def blocks(lines: Sequence[str]) -> list[Block]:
    """The blocks of a chunk of lines that starts at a block or a blank line."""
    found: list[Block] = []
    previous = ""
    for i, line in enumerate(lines):
        if starts_block(previous, line):
            found.append(Block(i, [line]))
        elif line.strip():
            found[-1].lines.append(line)
        previous = line
    return found


def translate_paragraphs(
    backend: Backend, raw_lines: Sequence[bytes], retry: RetryPolicy, stop: threading.Event
) -> ChunkResult:
    """Translate a chunk of a document (UTF-8 lines without their line endings, starting at a block or a
    blank line) into its output lines; failures are (index in the chunk, reason)."""
    lines: list[str] = []
    invalid: dict[int, str] = {}
    for i, raw in enumerate(raw_lines):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            lines.append(raw.decode("utf-8", errors="replace"))
            invalid[i] = f"the line is not valid UTF-8: {exc}"
    found = blocks(lines)
    failures: list[tuple[int, str]] = []
    todo: list[Block] = []
    for block in found:
        reasons = [invalid[i] for i in range(block.first, block.first + len(block.lines)) if i in invalid]
        if reasons:
            failures.append((block.first, reasons[0]))
        else:
            todo.append(block)
    output = {block.first: block.lines for block in found}  # copied as they are unless translated
    if todo:
        results = translate_texts(backend, [block.text for block in todo], retry, stop)
        for block, result in zip(todo, results, strict=True):
            if isinstance(result, str):
                failures.append((block.first, result))
            else:
                output[block.first] = block.render(result[0].text)
    starting = {block.first: block for block in found}
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in starting:
            out += output[i]
            i += len(starting[i].lines)
        else:
            out.append(lines[i])
            i += 1
    failures.sort()
    return ChunkResult(out, failures)
