"""Documents: plain text, subtitles and Word files taken apart and put back with their translations, the
downloads kept for a while, and LibreTranslate's /translate_file on a real server."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docx
import pptx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from odf import teletype
from odf.opendocument import OpenDocumentText, load
from odf.text import H, P, Span
from servers import ServerThread, running

from rnnmt.serving.documents.formats import BadDocument, read_document
from rnnmt.serving.documents.subtitles import break_lines
from rnnmt.serving.http.downloads import Downloads

SRT = (
    "1\n00:00:01,000 --> 00:00:02,500\nEl perro\ncome pan.\n\n"
    "2\n00:00:03,000 --> 00:00:04,250\n<i>Un gato</i> bebe agua.\n\n"
    "3\n01:00:05,000 --> 01:00:06,000\nEl niño ve pan.\n"
)
VTT = (
    "WEBVTT - a header\n\nNOTE kept as it is\n\nSTYLE\n::cue { color: yellow }\n\n"
    "intro\n00:01.000 --> 00:02.500 align:start position:10%\nEl perro come pan.\n\n"
    "00:00:03.000 --> 00:00:04.000\nUn gato\nbebe agua.\n"
)


def upper(texts: list[str]) -> list[str]:
    return [text.upper() for text in texts]


def test_plain_text_keeps_its_paragraphs_and_spacing() -> None:
    text = "Uno. Dos.\n\n  Tres\ncuatro.\n \n\nCinco.\n"
    document = read_document("a.txt", text.encode())
    assert document.texts == ["Uno. Dos.", "Tres\ncuatro.", "Cinco.\n"]  # the breaks hold the indent
    assert document.rebuild(document.texts) == text.encode()
    assert document.rebuild(upper(document.texts)) == text.upper().encode()


def test_subtitles_keep_numbers_timings_and_line_counts() -> None:
    document = read_document("a.srt", SRT.encode())
    assert document.texts == ["El perro come pan.", "Un gato bebe agua.", "El niño ve pan."]
    out = document.rebuild(["The dog eats bread.", "A cat drinks water.", "The boy sees bread."]).decode()
    assert out == (
        "1\n00:00:01,000 --> 00:00:02,500\nThe dog\neats bread.\n\n"
        "2\n00:00:03,000 --> 00:00:04,250\nA cat drinks water.\n\n"
        "3\n01:00:05,000 --> 01:00:06,000\nThe boy sees bread.\n"
    )


def test_webvtt_keeps_its_header_notes_styles_and_cue_settings() -> None:
    document = read_document("a.vtt", VTT.encode())
    assert document.texts == ["El perro come pan.", "Un gato bebe agua."]
    out = document.rebuild(["The dog eats bread.", "A cat drinks water."]).decode()
    assert out == VTT.replace("El perro come pan.", "The dog eats bread.").replace(
        "Un gato\nbebe agua.", "A cat drinks\nwater."
    )


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "a.srt",
            b"1\n00:00:01 --> 00:00:02\nHola\n",
            "a.srt line 2: '00:00:01 --> 00:00:02' is not a cue timing",
        ),
        ("a.srt", b"just text\n", "a.srt has no cues"),
        ("a.txt", b"caf\xe9", "a.txt is not UTF-8 text: byte 3"),
        ("a.docx", b"PK\x03\x04 not really", "a.docx is not a valid .docx file"),
        ("a.pdf", b"%PDF-1.4", "a.pdf: files of this type are not translated here; send one of .txt"),
    ],
)
def test_a_malformed_file_says_what_is_wrong(name: str, data: bytes, message: str) -> None:
    with pytest.raises(BadDocument, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_document(name, data)


@given(
    st.lists(st.text(alphabet="abc ", min_size=1), min_size=1, max_size=8).map(" ".join), st.integers(1, 4)
)
def test_a_cue_is_broken_into_as_many_lines_between_words(text: str, count: int) -> None:
    lines = break_lines(text, count)
    assert len(lines) == count and " ".join(" ".join(lines).split()) == " ".join(text.split())


def word_file() -> bytes:
    document = docx.Document()
    document.add_heading("El perro", level=1)
    paragraph = document.add_paragraph("El perro ")
    paragraph.add_run("come").bold = True
    paragraph.add_run(" pan.")
    document.add_paragraph("")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Un gato"
    table.rows[0].cells[1].text = "bebe agua."
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_a_word_file_comes_back_with_its_paragraphs_and_tables_translated() -> None:
    document = read_document("a.docx", word_file())
    assert document.texts == ["El perro", "El perro come pan.", "Un gato", "bebe agua."]
    opened = docx.Document(io.BytesIO(document.rebuild(upper(document.texts))))
    assert [p.text for p in opened.paragraphs] == ["EL PERRO", "EL PERRO COME PAN.", ""]
    assert opened.paragraphs[0].style.name == "Heading 1"
    assert [cell.text for cell in opened.tables[0].rows[0].cells] == ["UN GATO", "BEBE AGUA."]


def slides() -> bytes:
    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])  # title and content
    slide.shapes.title.text = "El perro"
    body = slide.placeholders[1].text_frame
    body.text = "El perro come pan."
    body.add_paragraph().text = "Un gato bebe agua."
    slide.notes_slide.notes_text_frame.text = "El niño ve pan."
    table = slide.shapes.add_table(1, 1, 0, 0, 100, 100).table
    table.cell(0, 0).text = "Un gato"
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def test_a_presentation_comes_back_with_its_slides_notes_and_tables_translated() -> None:
    document = read_document("talk.pptx", slides())
    assert document.texts == [
        "El perro",
        "El perro come pan.",
        "Un gato bebe agua.",
        "Un gato",
        "El niño ve pan.",
    ]
    opened = pptx.Presentation(io.BytesIO(document.rebuild(upper(document.texts))))
    slide = opened.slides[0]
    assert slide.shapes.title.text == "EL PERRO"
    assert [p.text for p in slide.placeholders[1].text_frame.paragraphs] == [
        "EL PERRO COME PAN.",
        "UN GATO BEBE AGUA.",
    ]
    assert slide.notes_slide.notes_text_frame.text == "EL NIÑO VE PAN."


def open_document_text() -> bytes:
    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="El perro"))
    paragraph = P(text="El perro ")
    paragraph.addElement(Span(text="come"))
    paragraph.addText(" pan.")
    document.text.addElement(paragraph)
    document.text.addElement(P(text=""))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_an_open_document_comes_back_with_its_headings_and_paragraphs_translated() -> None:
    document = read_document("letter.odt", open_document_text())
    assert document.texts == ["El perro", "El perro come pan."]
    opened = load(io.BytesIO(document.rebuild(upper(document.texts))))
    assert [teletype.extractText(h) for h in opened.getElementsByType(H)] == ["EL PERRO"]
    assert [teletype.extractText(p) for p in opened.getElementsByType(P)] == ["EL PERRO COME PAN.", ""]


@pytest.mark.parametrize(
    ("name", "make"), [("a.docx", word_file), ("a.pptx", slides), ("a.odt", open_document_text)]
)
def test_a_truncated_office_file_is_refused(name: str, make: Callable[[], bytes]) -> None:
    data = make()
    with pytest.raises(BadDocument, match=re.escape(f"{name} is not a valid {Path(name).suffix} file")):
        read_document(name, data[: len(data) // 2])


def test_downloads_expire_and_make_room() -> None:
    now = [0.0]
    downloads = Downloads(keep_seconds=60, max_files=2, max_bytes=10, clock=lambda: now[0])
    first = downloads.put("a.txt", b"1234")
    second = downloads.put("b.txt", b"5678")
    assert downloads.get(first).data == b"1234"  # type: ignore[union-attr]
    third = downloads.put("c.txt", b"9")  # two files at most: the oldest goes
    assert downloads.get(first) is None and downloads.get(second) is not None
    downloads.put("d.txt", b"0123456")  # 10 bytes at most: the second goes too
    assert downloads.get(second) is None and downloads.get(third) is not None
    now[0] = 60.0
    assert downloads.get(third) is None


def multipart(fields: dict[str, str], name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def fetch(url: str, data: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data, {"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1, http_port=0, max_message_bytes=64 * 1024) as s:
        yield s


def translate_file(server: ServerThread, name: str, data: bytes, source: str = "es") -> tuple[int, Any]:
    body, kind = multipart({"source": source, "target": "en"}, name, data)
    status, answer = fetch(f"http://127.0.0.1:{server.server.http_port}/translate_file", body, kind)
    return status, json.loads(answer)


def test_translate_file_answers_a_url_to_download_the_translation(server: ServerThread) -> None:
    status, answer = translate_file(server, "cues.srt", SRT.encode(), source="auto")
    assert status == 200, answer
    status, data = fetch(answer["translatedFileUrl"])
    assert status == 200
    assert data.decode().splitlines()[:2] == SRT.splitlines()[:2]  # number and timing as they were
    assert "The boy sees bread." in data.decode() and data.decode().count("-->") == 3
    status, answer = translate_file(server, "letter.docx", word_file())
    assert status == 200, answer
    opened = docx.Document(io.BytesIO(fetch(answer["translatedFileUrl"])[1]))
    assert opened.paragraphs[1].text == "The dog eats bread."
    port = server.server.http_port
    assert fetch(f"http://127.0.0.1:{port}/download_file/nope/letter.docx")[0] == 404


def test_translate_file_refuses_what_it_cannot_translate(server: ServerThread) -> None:
    truncated = word_file()[:2000]
    status, answer = translate_file(server, "letter.docx", truncated)
    assert status == 400 and answer["error"].startswith("letter.docx is not a valid .docx file")
    assert translate_file(server, "scan.pdf", b"%PDF")[0] == 400
    status, answer = translate_file(server, "big.txt", b"perro " * 20_000)
    assert status == 413 and "at most 65536" in answer["error"]
