"""Word documents (``.docx``, with python-docx): every paragraph of the body and of its tables is a text.
A paragraph's translation goes into its first run, whose formatting it takes, and the other runs are
emptied: styles, numbering, tables, images and the rest of the package come back as they were, but
bold or italic words inside a paragraph take the formatting of its first run."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

from docx import Document as open_docx
from docx.document import Document as DocxFile
from docx.opc.exceptions import PackageNotFoundError
from docx.text.paragraph import Paragraph

from rnnmt.serving.documents.formats import BadDocument, Document, runs_document


def paragraphs(document: DocxFile) -> Iterator[Paragraph]:
    """The body's paragraphs, then its tables' (a merged cell's once)."""
    yield from document.paragraphs
    seen = set()
    for table in document.tables:
        for row in table.rows:
            for cell in row.cells:
                if id(cell._tc) not in seen:
                    seen.add(id(cell._tc))
                    yield from cell.paragraphs


def docx_document(data: bytes, name: str) -> Document:
    try:
        document = open_docx(io.BytesIO(data))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError) as exc:
        raise BadDocument(f"{name} is not a valid .docx file: {exc or type(exc).__name__}") from None
    return runs_document(document, list(paragraphs(document)))
