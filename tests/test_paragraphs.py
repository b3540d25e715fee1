"""`rnnmt batch --paragraphs`: documents of hard-wrapped paragraphs and list items, translated whole and
written back in their layout; chunks never cut a paragraph, and a stopped job resumes exactly once."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import toy_pairs

from rnnmt.cli import main
from rnnmt.errors import RnnmtError
from rnnmt.serving.batch.backends import EngineBackend, ModelFacts, Rejected
from rnnmt.serving.batch.checkpoint import errors_path, read_state
from rnnmt.serving.batch.chunk import RetryPolicy
from rnnmt.serving.batch.formats import LineFormat
from rnnmt.serving.batch.job import BatchJob, read_chunks, run
from rnnmt.serving.batch.paragraphs import translate_paragraphs
from rnnmt.serving.core.options import Decoding
from rnnmt.serving.core.translator import TextHypothesis

DOCUMENT = """\
  El perro come pan. Un gato
bebe agua y el niño
ve leche.

- El gato ve pan.
- Un niño bebe
  agua y leche.
2) Dos.
\t
Una línea sola, larga, que no se parte aunque su traducción sea más larga.
"""


class Doubling:
    """A backend whose "translation" writes every word twice, and refuses texts containing "MAL"."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def open(self) -> ModelFacts:
        return ModelFacts("doubling", "1", 0)

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        if any("MAL" in text for text in texts):
            raise Rejected("texts[0] is bad")
        self.texts += texts
        return [[TextHypothesis(" ".join(w for w in text.split() for _ in "12"), 0.0)] for text in texts]

    def close(self) -> None:
        """Nothing to close."""


def translate(document: str, backend: Doubling) -> tuple[str, list[tuple[int, str]]]:
    raw = [line.encode() for line in document.splitlines()]
    result = translate_paragraphs(backend, raw, RetryPolicy(retries=0), threading.Event())
    return "".join(line + "\n" for line in result.lines), result.failures


def test_wrapped_paragraphs_and_list_items_are_translated_whole_and_wrapped_back() -> None:
    backend = Doubling()
    text, failures = translate(DOCUMENT, backend)
    assert failures == []
    assert backend.texts == [
        "El perro come pan. Un gato bebe agua y el niño ve leche.",
        "El gato ve pan.",
        "Un niño bebe agua y leche.",
        "Dos.",
        "Una línea sola, larga, que no se parte aunque su traducción sea más larga.",
    ]
    assert text == (
        "  El El perro perro come\n"  # wrapped at 28 characters, the paragraph's widest line
        "come pan. pan. Un Un gato\n"
        "gato bebe bebe agua agua y y\n"
        "el el niño niño ve ve leche.\n"
        "leche.\n"
        "\n"
        "- El El gato gato ve ve pan. pan.\n"  # one line stays one line
        "- Un Un niño\n"  # at 15, the second line's indentation kept
        "  niño bebe\n"
        "  bebe agua\n"
        "  agua y y\n"
        "  leche. leche.\n"
        "2) Dos. Dos.\n"
        "\t\n"
        "Una Una línea línea sola, sola, larga, larga, que que no no se se parte parte aunque aunque su su "
        "traducción traducción sea sea más más larga. larga.\n"
    )


def test_a_refused_or_undecodable_block_is_copied_as_it_is_and_listed() -> None:
    raw = [b"Uno bueno.", b"", b"- Esto es MAL", b"  escrito.", b"- Roto \xff aqu\xc3\xad.", b"Fin."]
    result = translate_paragraphs(Doubling(), raw, RetryPolicy(retries=0), threading.Event())
    assert result.lines == [
        "Uno Uno bueno. bueno.",
        "",
        "- Esto es MAL",
        "  escrito.",
        "- Roto \ufffd aquí.",
        "Fin.",  # the same paragraph as the broken line, so not translated either
    ]
    assert [i for i, _ in result.failures] == [2, 4]
    assert result.failures[0][1] == "the text is bad"
    assert "not valid UTF-8" in result.failures[1][1]


def test_chunks_of_a_document_end_only_between_blocks(tmp_path: Path) -> None:
    path = tmp_path / "doc.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    lines = DOCUMENT.splitlines()
    chunks = list(read_chunks(path, 0, 0, len(lines), 1, paragraphs=True))
    assert [chunk.first_line for chunk in chunks] == [0, 4, 5, 7, 9]  # blank lines go with the block before
    assert [line.decode() for chunk in chunks for line in chunk.lines] == lines
    assert chunks[-1].end_offset == len(DOCUMENT.encode())
    two = list(read_chunks(path, 0, 0, len(lines), 2, paragraphs=True))
    assert [chunk.first_line for chunk in two] == [0, 5, 9]
    by_line = list(read_chunks(path, 0, 0, len(lines), 4))
    assert [len(chunk.lines) for chunk in by_line] == [4, 4, 2]


# -- with the tiny model ----------------------------------------------------------------------------------


def test_a_hard_wrapped_document_is_translated_by_sentence_across_its_line_breaks(
    model_dir: Path, tmp_path: Path
) -> None:
    document = tmp_path / "doc.es"
    document.write_text("El perro come pan. Un gato\nbebe agua.\n\n  El niño ve leche.\n", encoding="utf-8")
    out = tmp_path / "doc.en"
    command = ["batch", str(document), "--out", str(out), "--model", str(model_dir)]
    assert main([*command, "--paragraphs"]) == 0
    assert out.read_text(encoding="utf-8") == (
        "The dog eats bread. A cat\ndrinks water.\n\n  The boy sees milk.\n"
    )
    assert main([*command, "--paragraphs", "--reference", str(document)]) == 2
    assert main([*command[:3], str(tmp_path / "x"), *command[4:], "--paragraphs", "--shard", "1/2"]) == 2


class Stopping(EngineBackend):
    """The in-process engine, failing for good after ``calls`` requests."""

    def __init__(self, package: Path, calls: int) -> None:
        super().__init__(package, "", Decoding(), split_sentences=True)
        self.calls = calls

    def translate(self, texts: Sequence[str]) -> list[list[TextHypothesis]]:
        self.calls -= 1
        if self.calls < 0:
            raise RnnmtError("the engine went away")
        return super().translate(texts)


def test_a_stopped_document_job_resumes_to_the_same_output(model_dir: Path, tmp_path: Path) -> None:
    sentences = [pair.src for pair in toy_pairs()]
    paragraphs = []
    for i in range(0, len(sentences), 3):
        words = " ".join(sentences[i : i + 3]).split()
        paragraphs.append("\n".join(" ".join(words[j : j + 5]) for j in range(0, len(words), 5)))
    paragraphs.insert(7, "perro " * 300)  # one sentence over the model's input limit
    document = tmp_path / "doc.es"
    document.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    job = BatchJob(
        document, tmp_path / "whole.en", LineFormat(), chunk_lines=2, concurrency=2, paragraphs=True
    )
    whole = run(job, EngineBackend(model_dir, "", Decoding(), split_sentences=True), io.StringIO())
    assert whole.state.done and whole.state.failed == 1
    first_line = sum(p.count("\n") + 2 for p in paragraphs[:7])
    assert json.loads(errors_path(job.output).read_text())["line"] == first_line + 1

    stopped = BatchJob(
        document, tmp_path / "out.en", LineFormat(), chunk_lines=2, concurrency=1, paragraphs=True
    )
    with pytest.raises(RnnmtError, match="the engine went away"):
        run(stopped, Stopping(model_dir / "toy", 4), io.StringIO())
    state = read_state(stopped.output)
    assert state is not None and not state.done and 0 < state.next_line < whole.state.lines
    resumed = run(stopped, Stopping(model_dir / "toy", 1000), io.StringIO())
    assert resumed.translated == whole.state.lines - state.next_line
    assert stopped.output.read_bytes() == job.output.read_bytes()
    assert errors_path(stopped.output).read_bytes() == errors_path(job.output).read_bytes()
    first = job.output.read_text(encoding="utf-8").split("\n\n")[0]
    assert " ".join(first.split()) == "The dog eats water. The dog eats bread. The dog eats milk."
