"""Markdown (``.md``, ``.markdown``; CommonMark with GitHub's tables, task lists, strikethrough and
footnotes, and YAML front matter): the text of headings, paragraphs, list items, block quotes, table
cells and footnotes is translated; everything else comes back byte for byte.

Parsed with pyromark, the binding of pulldown-cmark (a CommonMark-compliant parser), whose events carry
the byte range of their source: only the ranges of text events are rewritten, so code blocks, code
spans, link destinations and titles, images, autolinks, raw HTML, front matter, reference definitions,
list, heading and block-quote markers, table pipes and alignment rows, and the blank lines are the
file's own bytes. (markdown-it-py gives lines for blocks but no offsets inside them, which would mean
finding each inline token again by hand; tree-sitter-markdown gives byte ranges but says it is not
CommonMark-compliant.)

A text is a run of text between two pieces of inline markup, like the text between tags in
:mod:`~rnnmt.serving.documents.html`: in ``El *perro* come pan.`` the pieces ``El``, ``perro`` and
``come pan.`` are translated apart, every delimiter keeping its place. Not translated: the text of
code, front matter and HTML (HTML blocks whole; inline tags stay, the text between them is
translated), image descriptions, autolinks, and the labels of ``[shortcut]`` and ``[collapsed][]``
reference links (the label is what finds the definition). A text goes on across a paragraph's soft
line breaks, so a hard-wrapped sentence is one text; its translation is broken between words into as
many lines (fewer if it has fewer words), and the line ends with what starts the next line (its
indentation, ``>`` markers) are kept. A hard line break ends a text.

A text is translated without its escapes and entities (``\\*`` is ``*``, ``&amp;`` is ``&``), its
leading and trailing whitespace kept as written; the translation is written back escaped so that it
stays text: ``\\``, `````, ``*``, ``[``, ``]``, ``<``, ``~``, ``_`` outside a word, ``|`` in a table
cell and ``&`` before an entity get a backslash, and so does a line's first character that could
start a block (``#``, ``>``, ``-``, ``+``, ``=``, ``|``, ``1.``). Emphasis written against a word
(``*API*s``) depends on the characters next to its delimiters: it stays emphasis as long as the
translation keeps the kind of character (letter, punctuation) at that end of its text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pyromark

from rnnmt.serving.documents.formats import BadDocument, Document, decode
from rnnmt.serving.documents.subtitles import break_lines

OPTIONS = (
    pyromark.Options.ENABLE_TABLES
    | pyromark.Options.ENABLE_FOOTNOTES
    | pyromark.Options.ENABLE_STRIKETHROUGH
    | pyromark.Options.ENABLE_TASKLISTS
    | pyromark.Options.ENABLE_YAML_STYLE_METADATA_BLOCKS
    | pyromark.Options.ENABLE_GFM
)
KEPT_BLOCKS = {"CodeBlock", "HtmlBlock", "MetadataBlock", "Image"}  # their text is not translated
KEPT_LINKS = {"Autolink", "Email", "Shortcut", "ShortcutUnknown", "Collapsed", "CollapsedUnknown"}
WORD = re.compile(r"\w")
INLINE = re.compile(r"[\\`*\[\]<~]|(?<![^\W_])_|_(?![^\W_])|&(?=#?\w+;)")
BLOCK_START = re.compile(r"[#>+=|-]|\d{1,9}(?=[.)])")


def escape(line: str, cell: bool) -> str:
    """``line`` with backslashes before what Markdown would read as markup (see the module docstring);
    ``cell``: in a table cell, where ``|`` is markup too."""
    line = INLINE.sub(lambda m: "\\" + m[0], line)
    if cell:
        line = line.replace("|", "\\|")
    start = BLOCK_START.match(line)
    if start is None:
        return line
    if start[0].isdigit():
        return f"{start[0]}\\{line[start.end() :]}"
    return "\\" + line


Run = tuple[int, int, str]  # a text event: its start and end in the file's bytes, its text


def spaces(runs: Sequence[Run], data: bytes, end: bool) -> bytes:
    """The source of the whitespace that ``runs`` start with (``end``: end with): whole runs of
    whitespace (``&nbsp;`` too), then the whitespace written at that end of the next run."""
    found = []
    for start, stop, text in reversed(runs) if end else runs:
        source, rest = data[start:stop], text.rstrip() if end else text.lstrip()
        if not rest:
            found.append(source)
            continue
        space = (text[len(rest) :] if end else text[: len(text) - len(rest)]).encode()
        if source.endswith(space) if end else source.startswith(space):
            found.append(space)
        break
    return b"".join(reversed(found) if end else found)


@dataclass
class Piece:
    """A text: per source line, its text events; whether it is in a table cell."""

    lines: list[list[Run]]
    cell: bool

    @property
    def start(self) -> int:
        return self.lines[0][0][0]

    @property
    def end(self) -> int:
        return self.lines[-1][-1][1]

    @property
    def text(self) -> str:
        """What is translated: the text without escapes and entities, its lines joined, its whitespace
        runs one space, without leading and trailing whitespace."""
        words = " ".join("".join(text for _, _, text in line) for line in self.lines).split()
        return " ".join(words)

    def render(self, data: bytes, translation: str) -> bytes:
        """The bytes that replace ``data[start:end]``: the translation on as many lines as the text (at
        most one a word), with the source's line ends, and the text's outer whitespace as written."""
        lead, trail = spaces(self.lines[0], data, end=False), spaces(self.lines[-1], data, end=True)
        count = min(len(self.lines), len(translation.split()))
        breaks = [data[before[-1][1] : after[0][0]] for before, after in pairwise(self.lines)]
        lines = [escape(line, self.cell) for line in break_lines(translation, count) if line] or [""]
        if lines[-1].endswith("!") and not trail and data[self.end : self.end + 1] == b"[":
            lines[-1] = lines[-1][:-1] + "\\!"  # not an image with the link after it
        out = [lead]
        for line, line_break in zip(lines, [*breaks[: len(lines) - 1], b""], strict=True):
            out += [line.encode(), line_break]
        return b"".join([*out, trail])


def opened(tag: Any) -> tuple[str, bool]:
    """The name of a Start event's ``tag``, and whether the text inside it is kept as it is."""
    if isinstance(tag, str):
        return tag, tag in KEPT_BLOCKS
    ((name, value),) = tag.items()
    return name, name in KEPT_BLOCKS or (name == "Link" and value["link_type"] in KEPT_LINKS)


def pieces(text: str) -> list[Piece]:
    """The texts of a Markdown document, in order (see the module docstring)."""
    found: list[Piece] = []
    tags: list[tuple[str, bool]] = []  # the open tags: name, and whether the text inside is kept
    current: Piece | None = None
    broken = False  # a soft line break since the last text event of ``current``
    data = text.encode()
    for event, span in pyromark.events_with_range(text, options=OPTIONS):
        if isinstance(event, dict) and "Text" in event and not (tags and tags[-1][1]):
            start, source = span["start"], event["Text"]
            if data[start - 1 : start] == b"\\" and source[:1] in string.punctuation:
                start -= 1  # the backslash of an escape goes with the character it escapes
            run = (start, span["end"], source)
            if current is None:
                current = Piece([[run]], any(name == "TableCell" for name, _ in tags))
                found.append(current)
            elif broken:
                current.lines.append([run])
            else:
                current.lines[-1].append(run)
            broken = False
        elif event == "SoftBreak" and current is not None:
            broken = True
        else:
            current, broken = None, False
            if isinstance(event, dict) and "Start" in event:
                name, kept = opened(event["Start"])
                tags.append((name, kept or (bool(tags) and tags[-1][1])))
            elif isinstance(event, dict) and "End" in event:
                tags.pop()
    return found


def put_back(data: bytes, found: Sequence[Piece], translations: Sequence[str]) -> bytes:
    """``data`` with each piece's translation in its place."""
    out, last = [], 0
    for piece, translation in zip(found, translations, strict=True):
        out += [data[last : piece.start], piece.render(data, translation)]
        last = piece.end
    out.append(data[last:])
    return b"".join(out)


def markdown_document(data: bytes, name: str) -> Document:
    text = decode(data, name)
    if "\0" in text:
        raise BadDocument(f"{name} is not text: byte {data.index(0)} is NUL")
    found = [piece for piece in pieces(text) if WORD.search(piece.text)]
    source = text.encode()
    return Document(
        [piece.text for piece in found], lambda translations: put_back(source, found, translations)
    )
