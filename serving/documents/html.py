"""HTML: the text between tags is translated; every tag, attribute, comment, declaration and entity
outside that text comes back byte for byte, as does the whitespace around each text.

Parsed with the standard library's ``html.parser`` (the HTML5 tokenizer rules, tolerant of broken
markup), which reports each token where it starts, so the document is rebuilt from its own bytes.
Nothing inside ``script``, ``style``, ``code``, ``pre``, ``textarea``, ``template``, or an element
with ``translate="no"`` is translated. A text is the characters between two tags (entities decoded);
its translation is written back escaped (``&``, ``<``, ``>``).

**Inline tags** (:data:`INLINE`: ``b``, ``i``, ``a``, ``span``, ...) do not cut sentences: the text of
``El <b>perro</b> come pan.`` is one :class:`Segment`, ``El perro come pan.``, translated as it would be
without its tags, and each inline element is put back around the words of the translation that were
translated from the words it held (:func:`render`, from the model's attention,
:mod:`rnnmt.serving.core.alignment`). The elements keep their order and nesting, so the document's markup
comes back the same, tag for tag, only in other places. A segment whose inline tags do not pair up
within it, or a model that cannot align, falls back to translating the text between any two tags apart.
Attribute values (``alt``, ``title``) are not translated.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

from rnnmt.serving.core.alignment import Alignment
from rnnmt.serving.core.segment import Segmented
from rnnmt.serving.documents.formats import Document, decode

KEPT = {"script", "style", "code", "pre", "textarea", "template"}
VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
}  # fmt: skip
INLINE = {
    "a", "abbr", "b", "bdi", "bdo", "cite", "data", "dfn", "em", "font", "i", "kbd", "mark", "q", "s",
    "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var",
}  # fmt: skip
"""Elements that sit inside a sentence; a segment runs across their tags."""
WORD = re.compile(r"\w")


@dataclass
class Token:
    kind: str  # "text" (data and entities), or "markup"
    start: int  # offset in the document
    translate: bool = False
    tag: str = ""  # of a start or end tag ("/b" for an end tag)
    inline: bool = False  # a tag of an inline element whose content is translated


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

    def add(self, kind: str, tag: str = "", inline: bool = False) -> None:
        translate = kind == "text" and not (self.open and self.open[-1][1])
        last = self.tokens[-1] if self.tokens else None
        if last is None or kind == "markup" or last.kind != "text" or last.translate != translate:
            self.tokens.append(Token(kind, self.position(), translate, tag, inline))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            self.add("markup")
            return
        kept = bool(self.open and self.open[-1][1]) or tag in KEPT
        kept = kept or any(name == "translate" and (value or "").lower() == "no" for name, value in attrs)
        self.add("markup", tag, tag in INLINE and not kept)
        self.open.append((tag, kept))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.add("markup")

    def handle_endtag(self, tag: str) -> None:
        closing = next((kept for name, kept in reversed(self.open) if name == tag), True)
        self.add("markup", "/" + tag, tag in INLINE and not closing)
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


@dataclass(frozen=True)
class Element:
    """An inline element of a segment: its tags as written, and the span of the segment's text it holds."""

    open: str
    close: str
    start: int
    end: int
    parent: int  # the index of the element it is in, or -1


@dataclass(frozen=True)
class Segment:
    """A text of the document to translate: where it is (its tags included), its text with entities
    decoded, and the inline elements in it, in document order (an element before those inside it)."""

    start: int
    end: int
    text: str
    elements: list[Element]


def html_segments(text: str, inline: bool = True) -> list[Segment]:
    """The segments of the document ``text``: runs of translated text and, with ``inline``, the inline
    tags between them (see the module docstring); without ``inline``, each text between two tags."""
    segments: list[Segment] = []
    run: list[tuple[Token, int, int]] = []
    for token, a, b in [*tokens_of(text), (Token("markup", len(text)), len(text), len(text))]:
        if (token.kind == "text" and token.translate) or (inline and token.inline):
            run.append((token, a, b))
            continue
        segments += run_segments(text, run)
        run = []
    return segments


def run_segments(text: str, run: list[tuple[Token, int, int]]) -> list[Segment]:
    """The segment of a run of tokens, or one per text of it when its tags do not pair up."""
    plain: list[str] = []
    size = 0
    elements: list[Element] = []
    open_tags: list[tuple[str, int, str, int]] = []  # tag, start in the text, its markup, its index
    paired = True
    for token, a, b in run:
        if token.kind == "text":
            decoded = html.unescape(text[a:b])
            plain.append(decoded)
            size += len(decoded)
        elif not token.tag.startswith("/"):
            open_tags.append((token.tag, size, text[a:b], len(elements)))
            elements.append(Element("", "", 0, 0, open_tags[-2][3] if len(open_tags) > 1 else -1))
        elif open_tags and open_tags[-1][0] == token.tag[1:]:
            _, start, markup, index = open_tags.pop()
            elements[index] = Element(markup, text[a:b], start, size, elements[index].parent)
        else:
            paired = False
    joined = "".join(plain)
    if paired and not open_tags and run and WORD.search(joined):
        return [Segment(run[0][1], run[-1][2], joined, elements)]
    return [
        Segment(a, b, html.unescape(text[a:b]), [])
        for token, a, b in run
        if token.kind == "text" and WORD.search(text, a, b)
    ]


def render(
    segment: Segment, cut: Segmented, translations: Sequence[str], alignments: Sequence[Alignment]
) -> str:
    """The HTML of a segment translated: its sentences (``cut``) replaced by their ``translations`` and
    its inline elements put around the words translated from theirs (``alignments``, one per sentence;
    none needed without elements), escaped."""
    target = cut.join(translations)
    if not segment.elements:
        return html.escape(target, quote=False)
    ranges = element_ranges(segment, cut, translations, alignments, len(target))
    children: dict[int, list[int]] = {}
    for i, element in enumerate(segment.elements):
        children.setdefault(element.parent, []).append(i)

    def inside(parent: int, start: int, end: int) -> str:
        out, at = [], start
        for child in children.get(parent, []):
            a, b = ranges[child]
            element = segment.elements[child]
            out += [html.escape(target[at:a], quote=False), element.open, inside(child, a, b), element.close]
            at = b
        out.append(html.escape(target[at:end], quote=False))
        return "".join(out)

    return inside(-1, 0, len(target))


def element_ranges(
    segment: Segment,
    cut: Segmented,
    translations: Sequence[str],
    alignments: Sequence[Alignment],
    length: int,
) -> list[tuple[int, int]]:
    """Where each element goes in the translation (``length`` characters): from the first to the last
    word translated from a word it holds (every word of a sentence whose words it holds all), clamped
    into its parent and after its elder sibling, so that the elements keep their order and nesting."""
    linked: list[tuple[tuple[int, int], tuple[int, int]]] = []  # (source word, target word) spans
    whole: list[tuple[tuple[int, int], tuple[int, int]]] = []  # per sentence: from its first word to its last
    source_at, target_at = len(cut.gaps[0]), len(cut.gaps[0])
    for sentence, translation, alignment, gap in zip(
        cut.sentences, translations, alignments, cut.gaps[1:], strict=True
    ):
        for (a, b), link in zip(alignment.target_words, alignment.links, strict=True):
            if link >= 0:
                s, e = alignment.source_words[link]
                linked.append(((source_at + s, source_at + e), (target_at + a, target_at + b)))
        source_words = [(a, b) for a, b in alignment.source_words if WORD.match(sentence, a)]
        target_words = [(a, b) for a, b in alignment.target_words if WORD.match(translation, a)]
        if source_words and target_words:
            whole.append(
                (
                    (source_at + source_words[0][0], source_at + source_words[-1][1]),
                    (target_at + target_words[0][0], target_at + target_words[-1][1]),
                )
            )
        source_at += len(sentence) + len(gap)
        target_at += len(translation) + len(gap)
    ranges: list[tuple[int, int]] = []
    last_end: dict[int, int] = {}  # per parent, where its latest child ended
    for element in segment.elements:
        spans = [t for (s, e), t in linked if element.start <= s and e <= element.end]
        spans += [t for (s, e), t in whole if element.start <= s and e <= element.end]
        low, high = (0, length) if element.parent < 0 else ranges[element.parent]
        low = max(low, last_end.get(element.parent, low))
        start = min((a for a, _ in spans), default=low)
        end = max((b for _, b in spans), default=start)
        start = min(max(start, low), high)
        end = min(max(end, start), high)
        ranges.append((start, end))
        last_end[element.parent] = end
    return ranges


def rebuild_text(text: str, segments: Sequence[Segment], rendered: Sequence[str]) -> str:
    """``text`` with each segment replaced by its rendered HTML."""
    out, last = [], 0
    for segment, html_text in zip(segments, rendered, strict=True):
        out += [text[last : segment.start], html_text]
        last = segment.end
    out.append(text[last:])
    return "".join(out)


def html_document(data: bytes, name: str) -> Document:
    """An HTML file: one text, translated as HTML (``format: html``, inline tags placed by attention)."""
    text = decode(data, name)
    return Document([text], lambda translations: translations[0].encode(), format="html")


def pieces_document(data: bytes, name: str) -> Document:
    """An HTML file as its texts between any two tags, each translated apart (for translators that
    translate texts only: ``rnnmt batch``)."""
    text = decode(data, name)
    segments = html_segments(text, inline=False)

    def rebuild(translations: Sequence[str]) -> bytes:
        rendered = [html.escape(translation, quote=False) for translation in translations]
        return rebuild_text(text, segments, rendered).encode()

    return Document([segment.text for segment in segments], rebuild)
