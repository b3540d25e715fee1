"""The document formats: a file's name and bytes → a :class:`Document`, the texts to translate and how
to put their translations back. Everything outside the texts comes back as it was.

- ``.txt``: UTF-8 text, one text per paragraph (blank lines apart), its line breaks and spacing kept.
- ``.srt``, ``.vtt``: subtitles (:mod:`rnnmt.serving.documents.subtitles`).
- ``.docx``, ``.pptx``, ``.odt``: Word, PowerPoint and OpenDocument text files
  (:mod:`~rnnmt.serving.documents.docx`, :mod:`~rnnmt.serving.documents.pptx`,
  :mod:`~rnnmt.serving.documents.odt`).
- ``.html``, ``.htm``: HTML (:mod:`rnnmt.serving.documents.html`).
- ``.md``, ``.markdown``: Markdown, its markup kept (:mod:`rnnmt.serving.documents.markdown`).

The texts are translated sentence by sentence; a malformed file is a :class:`BadDocument` naming
what is wrong.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any, Protocol

from rnnmt.errors import RnnmtError

PARAGRAPH_BREAK = re.compile(r"(\n[ \t]*\n\s*)")


class BadDocument(RnnmtError):
    """A file that is not what its name says, or not one this server translates."""


@dataclass(frozen=True)
class Document:
    texts: list[str]
    rebuild: Callable[[Sequence[str]], bytes]
    """The file with these translations of :attr:`texts` in their places."""
    format: str = "text"
    """How the texts are translated: ``text``, sentence by sentence; ``html``, as HTML documents."""


class Office(Protocol):
    """A python-docx document or python-pptx presentation."""

    def save(self, file: IO[bytes]) -> None: ...


def runs_document(office: Office, paragraphs: Sequence[Any]) -> Document:
    """The document of an office file's ``paragraphs`` (python-docx's or python-pptx's, with runs): a
    paragraph's translation goes into its first run, whose formatting it takes, the others emptied."""
    found = [p for p in paragraphs if p.text.strip() and p.runs]

    def rebuild(translations: Sequence[str]) -> bytes:
        for paragraph, text in zip(found, translations, strict=True):
            first, *rest = paragraph.runs
            first.text = text
            for run in rest:
                run.text = ""
        out = io.BytesIO()
        office.save(out)
        return out.getvalue()

    return Document([p.text for p in found], rebuild)


def decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadDocument(f"{name} is not UTF-8 text: byte {exc.start} is not UTF-8") from None


def text_document(data: bytes, name: str) -> Document:
    parts = PARAGRAPH_BREAK.split(decode(data, name))  # paragraphs at even places, breaks between

    def rebuild(translations: Sequence[str]) -> bytes:
        out = list(parts)
        out[::2] = translations
        return "".join(out).encode()

    return Document(parts[::2], rebuild)


def read_document(name: str, data: bytes, suffix: str = "") -> Document:
    """The document of a file called ``name`` holding ``data``, in the format of its extension, or of
    ``suffix`` when given (one of :data:`FORMATS`)."""
    from rnnmt.serving.documents import docx, html, markdown, odt, pptx, subtitles

    readers: dict[str, Callable[[bytes, str], Document]] = {
        ".txt": text_document,
        ".srt": subtitles.subtitle_document,
        ".vtt": subtitles.subtitle_document,
        ".docx": docx.docx_document,
        ".pptx": pptx.pptx_document,
        ".odt": odt.odt_document,
        ".html": html.html_document,
        ".htm": html.html_document,
        ".md": markdown.markdown_document,
        ".markdown": markdown.markdown_document,
    }
    reader = readers.get(suffix or PurePath(name).suffix.lower())
    if reader is None:
        raise BadDocument(
            f"{name}: files of this type are not translated here; send one of {', '.join(FORMATS)}"
        )
    return reader(data, name)


FORMATS = (".txt", ".srt", ".vtt", ".docx", ".pptx", ".odt", ".html", ".htm", ".md", ".markdown")
"""The extensions :func:`read_document` takes."""
