"""OpenDocument text (``.odt``, with odfpy): every paragraph and heading (in tables and frames too) is a
text. A paragraph's translation goes into its first piece of text, inside whatever span holds it, and
its other pieces are emptied, its spacing elements (``text:s``, ``text:tab``, ``text:line-break``)
removed; styles and everything else in the package come back as they were."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from xml.parsers.expat import ExpatError

from odf import teletype
from odf.element import Element, Text
from odf.opendocument import load
from odf.text import H, LineBreak, P, S, Tab

from rnnmt.serving.documents.formats import BadDocument, Document

SPACING_NAMES = {S().qname, Tab().qname, LineBreak().qname}


def pieces(element: Element) -> Iterator[Element]:
    """The text nodes and spacing elements under ``element``, in order."""
    for child in element.childNodes:
        if isinstance(child, Text) or child.qname in SPACING_NAMES:
            yield child
        else:
            yield from pieces(child)


def odt_document(data: bytes, name: str) -> Document:
    try:
        document = load(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, ExpatError) as exc:
        raise BadDocument(f"{name} is not a valid .odt file: {exc or type(exc).__name__}") from None
    found = [
        p
        for p in document.getElementsByType(H) + document.getElementsByType(P)
        if teletype.extractText(p).strip()
    ]

    def rebuild(translations: Sequence[str]) -> bytes:
        for paragraph, text in zip(found, translations, strict=True):
            first = True
            for piece in list(pieces(paragraph)):
                if isinstance(piece, Text):
                    piece.data, first = (text if first else ""), False
                else:
                    piece.parentNode.removeChild(piece)
        out = io.BytesIO()
        document.save(out)
        return out.getvalue()

    return Document([teletype.extractText(p) for p in found], rebuild)
