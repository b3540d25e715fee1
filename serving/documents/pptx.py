"""PowerPoint files (``.pptx``, with python-pptx): every paragraph of every slide's shapes (groups and
tables included) and of its notes is a text. As for Word files, a paragraph's translation goes into
its first run, whose formatting it takes, and the other runs are emptied."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from pptx import Presentation
from pptx.exc import PackageNotFoundError
from pptx.shapes.group import GroupShape
from pptx.text.text import _Paragraph

from rnnmt.serving.documents.formats import BadDocument, Document, runs_document


def shape_paragraphs(shapes: Iterable[Any]) -> Iterator[_Paragraph]:
    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from shape_paragraphs(shape.shapes)
        if getattr(shape, "has_text_frame", False):
            yield from shape.text_frame.paragraphs
        if getattr(shape, "has_table", False):
            for row in shape.table.rows:
                for cell in row.cells:
                    yield from cell.text_frame.paragraphs


def pptx_document(data: bytes, name: str) -> Document:
    try:
        presentation = Presentation(io.BytesIO(data))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError) as exc:
        raise BadDocument(f"{name} is not a valid .pptx file: {exc or type(exc).__name__}") from None
    found: list[_Paragraph] = []
    for slide in presentation.slides:
        found += shape_paragraphs(slide.shapes)
        if slide.has_notes_slide:
            found += shape_paragraphs(slide.notes_slide.shapes)
    return runs_document(presentation, found)
