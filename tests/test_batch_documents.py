"""`rnnmt batch` on documents: each format of serving/documents through the tiny model gives what
read_document and the model's translations give; a job stopped or killed mid-way resumes to the same
bytes with every text translated once; malformed documents and options of line jobs are refused."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import docx
import pytest
from conftest import toy_pairs
from servers import RNNMT
from test_batch import committed_lines, serving, wait_until
from test_documents import SRT, VTT, open_document_text, slides, word_file
from test_html import PAGE
from test_markdown import TOY_README

from rnnmt.cli import main
from rnnmt.errors import RnnmtError
from rnnmt.serving.batch.backends import EngineBackend
from rnnmt.serving.batch.checkpoint import errors_path, progress_path, read_state
from rnnmt.serving.batch.documents import dated_as, run_document, texts_path
from rnnmt.serving.batch.job import BatchJob
from rnnmt.serving.core.options import Decoding
from rnnmt.serving.core.translator import TextHypothesis
from rnnmt.serving.documents.formats import read_document
from rnnmt.serving.documents.html import pieces_document

SENTENCES = [pair.src for pair in toy_pairs()]
BAD = "perro " * 300  # one sentence over the model's input limit: refused


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> EngineBackend:
    return EngineBackend(model_dir, "", Decoding(), split_sentences=True)


def expected(name: str, data: bytes, engine: EngineBackend, suffix: str = "") -> bytes:
    """What /translate_file does: the document with the model's translations, sentence by sentence
    (for HTML, its texts between tags translated apart: batch jobs do not place inline tags)."""
    document = read_document(name, data, suffix)
    if document.format == "html":
        document = pieces_document(data, name)
    return document.rebuild([hypotheses[0].text for hypotheses in engine.translate(document.texts)])


def contents(data: bytes) -> bytes | dict[str, bytes]:
    """A file's bytes, or an office file's entries (which python-docx, -pptx and odfpy date when saved)."""
    if not data.startswith(b"PK"):
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def batch(*args: object) -> int:
    return main(["batch", *map(str, args)])


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("cues.srt", lambda: SRT.encode()),
        ("cues.vtt", lambda: VTT.encode()),
        ("letter.docx", word_file),
        ("talk.pptx", slides),
        ("letter.odt", open_document_text),
        ("page.html", lambda: PAGE.encode()),
        ("README.md", lambda: TOY_README.encode()),
    ],
)
def test_each_format_gives_what_translate_file_gives(
    name: str, make: Callable[[], bytes], model_dir: Path, engine: EngineBackend, tmp_path: Path
) -> None:
    data = make()
    source, out = tmp_path / name, tmp_path / f"out-{name}"
    source.write_bytes(data)
    assert batch(source, "--out", out, "--model", model_dir, "--chunk-lines", "2") == 0
    assert contents(out.read_bytes()) == contents(expected(name, data, engine))
    assert read_state(out).done and not texts_path(out).exists()  # type: ignore[union-attr]
    assert batch(source, "--out", out, "--model", model_dir) == 0  # already complete: nothing to do


def test_a_document_through_a_server_gives_what_the_in_process_job_gives(
    model_dir: Path, engine: EngineBackend, tmp_path: Path
) -> None:
    source, out = tmp_path / "README.md", tmp_path / "out.md"
    source.write_text(TOY_README)
    with serving(model_dir, 1) as servers:
        assert batch(source, "--out", out, "--server", f"localhost:{servers.ports[0]}") == 0
    assert out.read_bytes() == expected("README.md", TOY_README.encode(), engine)


def test_format_says_what_the_input_is_whatever_its_extension(
    model_dir: Path, engine: EngineBackend, tmp_path: Path
) -> None:
    source = tmp_path / "cues.txt"
    source.write_text(SRT)
    assert batch(source, "--out", tmp_path / "cues.en", "--model", model_dir, "--format", "srt") == 0
    assert (tmp_path / "cues.en").read_bytes() == expected("cues.txt", SRT.encode(), engine, ".srt")
    lines = tmp_path / "lines.srt"
    lines.write_text("El perro come pan.\nUn gato bebe agua.\n")
    assert batch(lines, "--out", tmp_path / "lines.en", "--model", model_dir, "--format", "plain") == 0
    assert (tmp_path / "lines.en").read_text() == "The dog eats bread.\nA cat drinks water.\n"


@pytest.mark.parametrize(
    ("name", "data", "options", "message"),
    [
        ("letter.docx", word_file()[:2000], [], "letter.docx is not a valid .docx file"),
        ("notes.md", b"# T\xedtulo\n", [], "notes.md is not UTF-8 text: byte 3"),
        (
            "cues.srt",
            SRT.encode(),
            ["--shard", "1/2"],
            "a .srt document is translated whole: not with --shard",
        ),
        ("cues.srt", SRT.encode(), ["--tsv-column", "2"], "not with --tsv-column or --jsonl-field"),
        ("cues.srt", SRT.encode(), ["--beam-size", "2", "--n-best", "2"], "not with --n-best above 1"),
        ("cues.srt", SRT.encode(), ["--paragraphs"], "not with --paragraphs"),
        ("cues.srt", SRT.encode(), ["--reference", "ref.en"], "not with --paragraphs or a document"),
    ],
)
def test_a_malformed_document_or_a_line_option_is_refused_and_nothing_written(
    name: str,
    data: bytes,
    options: list[str],
    message: str,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, out = tmp_path / name, tmp_path / "out" / name
    source.write_bytes(data)
    assert batch(source, "--out", out, "--model", model_dir, *options) == 2
    assert message in capsys.readouterr().err
    assert not out.parent.exists()


def test_office_files_are_dated_as_their_input_so_a_rebuild_gives_the_same_bytes() -> None:
    original = word_file()
    document = read_document("a.docx", original)
    rebuilt = document.rebuild(document.texts)
    later = io.BytesIO()  # the same file saved a minute later
    with zipfile.ZipFile(io.BytesIO(rebuilt)) as source, zipfile.ZipFile(later, "w") as target:
        for info in source.infolist():
            info.date_time = (2031, 1, 2, 3, 4, 5)
            target.writestr(info, source.read(info.filename))
    assert dated_as(later.getvalue(), original) == dated_as(rebuilt, original)
    dates = [info.date_time for info in zipfile.ZipFile(io.BytesIO(original)).infolist()]
    assert [i.date_time for i in zipfile.ZipFile(io.BytesIO(dated_as(rebuilt, original))).infolist()] == dates
    assert dated_as(b"# Hola\n", original) == b"# Hola\n"


class Counting(EngineBackend):
    """The in-process engine, counting the texts it translated, failing for good after ``calls`` calls."""

    def __init__(self, model_dir: Path, calls: int = 1_000_000) -> None:
        super().__init__(model_dir, "", Decoding(), split_sentences=True)
        self.calls, self.translated = calls, 0

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        self.calls -= 1
        if self.calls < 0:
            raise RnnmtError("the engine went away")
        translations = super().translate(texts)
        self.translated += len(texts)
        return translations


def markdown_file(path: Path, paragraphs: int) -> Path:
    """A Markdown document of ``paragraphs`` headings and paragraphs of toy sentences, one refused."""
    blocks = [
        f"## {SENTENCES[i % 54]}" if i % 5 == 0 else f"{SENTENCES[i % 54]} {SENTENCES[(i * 7) % 54]}"
        for i in range(paragraphs)
    ]
    blocks[paragraphs * 3 // 4] = BAD
    path.write_text("\n\n".join(blocks) + "\n\n```\nEl perro come pan.\n```\n")
    return path


def word_document(path: Path, paragraphs: int) -> Path:
    document = docx.Document()
    for i in range(paragraphs):
        document.add_paragraph(BAD if i == paragraphs * 3 // 4 else SENTENCES[i % 54])
    document.save(str(path))
    return path


@pytest.mark.parametrize("make", [markdown_file, word_document])
def test_a_stopped_document_job_resumes_to_the_same_bytes_every_text_translated_once(
    make: Callable[[Path, int], Path], model_dir: Path, tmp_path: Path
) -> None:
    source = make(tmp_path / ("in.md" if make is markdown_file else "in.docx"), 40)
    document = BatchJob(source, tmp_path / "whole", chunk_lines=4, concurrency=2, document=source.suffix)
    whole = run_document(document, Counting(model_dir), io.StringIO())
    texts = whole.state.lines
    assert whole.state.done and whole.state.failed == 1 and texts == 40
    assert json.loads(errors_path(document.output).read_text())["text"] == 40 * 3 // 4 + 1

    stopped = BatchJob(source, tmp_path / "out", chunk_lines=4, concurrency=1, document=source.suffix)
    first = Counting(model_dir, calls=5)
    with pytest.raises(RnnmtError, match=r"the engine went away\n20 of 40 texts are done and saved"):
        run_document(stopped, first, io.StringIO())
    assert not stopped.output.exists() and read_state(stopped.output).next_line == 20  # type: ignore[union-attr]
    second = Counting(model_dir)
    resumed = run_document(stopped, second, io.StringIO())
    assert resumed.translated == texts - 20 and resumed.state.done
    assert (first.translated, second.translated) == (20, texts - 20 - 1)  # all but the refused one, once
    assert stopped.output.read_bytes() == document.output.read_bytes()
    assert errors_path(stopped.output).read_bytes() == errors_path(document.output).read_bytes()
    assert not texts_path(stopped.output).exists()


def test_a_document_job_killed_at_several_points_resumes_to_the_same_output(
    model_dir: Path, tmp_path: Path
) -> None:
    source = markdown_file(tmp_path / "in.md", 600)
    reference = tmp_path / "reference.md"
    command = [str(RNNMT), "batch", str(source), "--model", str(model_dir), "--chunk-lines", "2"]
    assert (
        subprocess.run([*command, "--out", str(reference)], capture_output=True, check=False).returncode == 3
    )
    out = tmp_path / "out.md"
    stopped_at = []
    for fraction in (0.3, 0.6):
        process = subprocess.Popen(
            [*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )
        try:
            wait_until(lambda f=fraction: committed_lines(out) >= f * 600, process)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        stopped_at.append(read_state(out).next_line)  # type: ignore[union-attr]
        assert not out.exists()
        with texts_path(out).open("ab") as f:  # as if killed after writing a chunk but before committing it
            f.write(b'"an uncommitted text"\n')
    assert stopped_at == sorted(stopped_at) and stopped_at[-1] < 600
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 3, done.stderr
    assert f"resuming after {stopped_at[-1]:,} done before" in done.stdout and "1 text failed" in done.stdout
    assert out.read_bytes() == reference.read_bytes()
    assert errors_path(out).read_bytes() == errors_path(reference).read_bytes()
    assert progress_path(out).exists() and not texts_path(out).exists()
