"""Documents in `rnnmt batch`: subtitles, office files, HTML and Markdown (:data:`DOCUMENTS`, the formats
of :mod:`rnnmt.serving.documents` but ``.txt``, which stays a line format), by extension or ``--format``.

The file is read whole (:func:`~rnnmt.serving.documents.formats.read_document`; a malformed one is
refused before anything is written). Its texts are translated sentence by sentence, ``chunk_lines`` texts
a request, with the chunks, backends and checkpoint of line jobs (:func:`~rnnmt.serving.batch.job.
translate_chunks`, :mod:`~rnnmt.serving.batch.checkpoint`), the texts counting as lines: each chunk's
translations are appended to ``OUT.texts.jsonl`` (one JSON string a text), and ``OUT.progress`` records
how many texts are final. A job stopped at any moment resumes after its last committed chunk, so no
committed text is translated again. Once every text is done the document is rebuilt from
``OUT.texts.jsonl``, written to a temporary file and renamed to ``OUT``; then the job is recorded done and
``OUT.texts.jsonl`` removed. An office file's zip entries are dated as in the input, so the output
depends on the input and its translations only: a resumed job writes the bytes an uninterrupted one does.

A text the model refuses is left untranslated and listed in ``OUT.errors.jsonl`` (``{"text": N,
"reason": …}``, N counted from 1; exit code 3).

HTML is translated as its texts between any two tags, each apart
(:func:`~rnnmt.serving.documents.html.pieces_document`): inline tags are placed by the model's attention
only on the server's HTML path (``format: html``, ``/translate_file``), which batch jobs do not take.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from pathlib import Path
from typing import TextIO

from rnnmt.errors import RnnmtError
from rnnmt.serving.batch.backends import Backend
from rnnmt.serving.batch.checkpoint import Checkpoint, JobState, publish, temporary_path
from rnnmt.serving.batch.chunk import ChunkResult, translate_texts
from rnnmt.serving.batch.job import (
    BatchJob,
    BatchResult,
    Chunk,
    check,
    open_model,
    resumable,
    translate_chunks,
    translation_identity,
    writing,
)
from rnnmt.serving.documents.formats import FORMATS, Document, read_document
from rnnmt.serving.documents.html import pieces_document

DOCUMENTS = tuple(suffix for suffix in FORMATS if suffix != ".txt")
FIRST_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def document_suffix(path: Path, fmt: str | None) -> str:
    """The document format of ``path`` (one of :data:`DOCUMENTS`): ``fmt`` (``docx`` or ``.docx``) when
    given, else its extension; "" for a line format."""
    if fmt is not None:
        suffix = "." + fmt.lower().lstrip(".")
        return suffix if suffix in DOCUMENTS else ""
    suffix = path.suffix.lower()
    return suffix if suffix in DOCUMENTS else ""


def texts_path(output: Path) -> Path:
    """Where a document job's translations are kept until the document is written."""
    return output.with_name(output.name + ".texts.jsonl")


def refuse_line_options(job: BatchJob) -> None:
    """Refuse the options of line jobs, which a document job has no use for."""
    given = [
        name
        for name, on in [
            ("--tsv-column or --jsonl-field", job.fmt.kind != "plain"),
            ("--shard", job.shard != (1, 1)),
            ("--paragraphs", job.paragraphs),
            ("--n-best above 1", job.fmt.n_best > 1 or job.decoding.n_best > 1),
        ]
        if on
    ]
    if given:
        raise RnnmtError(f"a {job.document} document is translated whole: not with {', '.join(given)}")


def dated_as(rebuilt: bytes, original: bytes) -> bytes:
    """An office file (a zip) with each entry dated as the input's entry of that name (new ones
    1980-01-01), not when it was written; any other file as it is."""
    if not rebuilt.startswith(b"PK") or not zipfile.is_zipfile(io.BytesIO(original)):
        return rebuilt
    with zipfile.ZipFile(io.BytesIO(original)) as source:
        dates = {info.filename: info.date_time for info in source.infolist()}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(rebuilt)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            entry = zipfile.ZipInfo(info.filename, dates.get(info.filename, FIRST_ZIP_DATE))
            entry.compress_type, entry.external_attr = info.compress_type, info.external_attr
            target.writestr(entry, source.read(info))
    return out.getvalue()


def write_document(output: Path, document: Document, data: bytes) -> None:
    """Rebuild ``document`` (read from ``data``) with the translations kept beside ``output``, and
    write it to ``output`` atomically."""
    with texts_path(output).open("rb") as f:
        translations = [json.loads(line) for line in f]
    temporary_path(output).write_bytes(dated_as(document.rebuild(translations), data))
    publish(output)


def run_document(job: BatchJob, backend: Backend, stream: TextIO | None = None) -> BatchResult:
    """Run (or resume) the document job ``job`` on ``backend``, showing progress on ``stream``."""
    check(job)
    refuse_line_options(job)
    start_time = time.monotonic()
    try:
        data = job.input.read_bytes()
    except OSError as exc:
        raise RnnmtError(f"cannot read {job.input}: {exc.strerror}") from None
    document = read_document(job.input.name, data, job.document)
    if document.format == "html":  # the backends translate texts: HTML as its texts between tags
        document = pieces_document(data, job.input.name)
    stop = threading.Event()
    identity = {
        "input_sha256": hashlib.sha256(data).hexdigest(),
        "input_bytes": len(data),
        "document": job.document,
        "texts": len(document.texts),
        **translation_identity(job, open_model(job, backend, stop)),
    }
    fresh = JobState(identity, (1, 1), 0, len(document.texts), 0, 0)
    with writing(job.output):
        checkpoint = Checkpoint.open(job.output, fresh, job.restart, texts_path(job.output), "text")
    if checkpoint.state.done:
        checkpoint.close()
        texts_path(job.output).unlink(missing_ok=True)  # if the job was stopped before removing it
        return BatchResult(checkpoint.state, 0, time.monotonic() - start_time, already_done=True)

    def work(texts: list[str]) -> ChunkResult:
        results = translate_texts(backend, texts, job.retry, stop)
        failures = [(i, result) for i, result in enumerate(results) if isinstance(result, str)]
        kept = [
            text if isinstance(result, str) else result[0].text
            for text, result in zip(texts, results, strict=True)
        ]
        return ChunkResult([json.dumps(text, ensure_ascii=False) for text in kept], failures)

    with resumable(checkpoint, "texts"):
        state, size = checkpoint.state, job.chunk_lines
        chunks = (
            Chunk(i, document.texts[i : i + size], 0) for i in range(state.next_line, state.end_line, size)
        )
        translated = translate_chunks(job, chunks, work, checkpoint, stop, "texts", stream)
        with writing(job.output):
            write_document(job.output, document, data)
            checkpoint.finish()
    texts_path(job.output).unlink()
    return BatchResult(checkpoint.state, translated, time.monotonic() - start_time, already_done=False)
