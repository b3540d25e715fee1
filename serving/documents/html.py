"""HTML: the text between tags is translated; every tag, attribute, comment, declaration and entity
outside that text comes back byte for byte, as does the whitespace around each text.

Parsed with the standard library's ``html.parser`` (the HTML5 tokenizer rules, tolerant of broken
markup), which reports each token where it starts, so the document is rebuilt from its own bytes.
Nothing inside ``script``, ``style``, ``code``, ``pre``, ``textarea``, ``template``, or an element
with ``translate="no"`` is translated. A text is the characters between two tags (entities decoded);
its translation is written back escaped (``&``, ``<``, ``>``).

Inline tags cut sentences: in ``El <b>perro</b> come pan.`` the pieces ``El``, ``perro`` and ``come
pan.`` are translated apart, so every tag keeps its place but a sentence across tags is translated in
pieces. Attribute values (``alt``, ``title``) are not translated.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

from rnnmt.serving.documents.formats import Document, decode

KEPT = {"script", "style", "code", "pre", "textarea", "template"}
VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
}  # fmt: skip
WORD = re.compile(r"\w")


@dataclass
class Token:
    kind: str  # "text" (data and entities), or "markup"
    start: int  # offset in the document
    translate: bool = False


class Tokens(HTMLParser):
    """Where each token of a document starts, and whether a text is to be translated."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self.line_starts = [0, *(m.end() for m in re.finditer("\n", text))]
        self.tokens: list[Token] = []
        self.open: list[tuple[str, bool]] = []  # (tag, kept: its content is not translated)
        self.feed(text)
        self.close()

    def position(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def add(self, kind: str) -> None:
        translate = kind == "text" and not (self.open and self.open[-1][1])
        last = self.tokens[-1] if self.tokens else None
        if last is None or kind == "markup" or last.kind != "text" or last.translate != translate:
            self.tokens.append(Token(kind, self.position(), translate))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.add("markup")
        if tag not in VOID:
            kept = bool(self.open and self.open[-1][1]) or tag in KEPT
            kept = kept or any(name == "translate" and (value or "").lower() == "no" for name, value in attrs)
            self.open.append((tag, kept))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.add("markup")

    def handle_endtag(self, tag: str) -> None:
        self.add("markup")
        for i in range(len(self.open) - 1, -1, -1):  # close up to the nearest open element of this tag
            if self.open[i][0] == tag:
                del self.open[i:]
                break

    def handle_data(self, data: str) -> None:
        self.add("text")

    def handle_entityref(self, name: str) -> None:
        self.add("text")

    def handle_charref(self, name: str) -> None:
        self.add("text")

    def handle_comment(self, data: str) -> None:
        self.add("markup")

    def handle_decl(self, decl: str) -> None:
        self.add("markup")

    def handle_pi(self, data: str) -> None:
        self.add("markup")

    def unknown_decl(self, data: str) -> None:
        self.add("markup")


def tokens_of(text: str) -> list[tuple[Token, int, int]]:
    """Each token of ``text`` with its start and end."""
    tokens = Tokens(text).tokens
    ends = [t.start for t in tokens[1:]] + [len(text)] * bool(tokens)
    return [(token, token.start, end) for token, end in zip(tokens, ends, strict=True)]


def html_texts(text: str) -> tuple[list[str], list[tuple[int, int]], str]:
    """(the texts to translate, entities decoded; their spans in ``text``; ``text``)."""
    spans = [(a, b) for token, a, b in tokens_of(text) if token.translate and WORD.search(text, a, b)]
    return [html.unescape(text[a:b]) for a, b in spans], spans, text


def put_back(text: str, spans: Sequence[tuple[int, int]], translations: Sequence[str]) -> str:
    """``text`` with the translation of each span in its place, escaped."""
    out, last = [], 0
    for (a, b), translation in zip(spans, translations, strict=True):
        out += [text[last:a], html.escape(translation, quote=False)]
        last = b
    out.append(text[last:])
    return "".join(out)


def html_document(data: bytes, name: str) -> Document:
    texts, spans, text = html_texts(decode(data, name))
    return Document(texts, lambda translations: put_back(text, spans, translations).encode())
