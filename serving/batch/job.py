"""`rnnmt batch`: translate a file of any size, streamed in chunks with several requests in flight,
resumable and exactly-once, with a progress bar.

First one pass over the input counts its lines (the progress bar's total) and hashes it (the job's
identity in its checkpoint, :mod:`~rnnmt.serving.batch.checkpoint`). The job then resumes from its
checkpoint, or starts, and reads the input from the recorded byte offset, ``chunk_lines`` lines at a time
(with ``paragraphs``: blocks of a document, :mod:`~rnnmt.serving.batch.paragraphs`). Up to
``concurrency`` chunks are translated at once on threads, so a server's dynamic batching gets sentences
of several requests to batch together (in-process, onnxruntime runs them in parallel); at most ``2 ×
concurrency`` chunks are held at once, so memory stays flat whatever the file's size. Chunks are
committed strictly in input order as they finish. A fatal error (retries spent, a server refusing the
job) stops the job after the last chunk committed in order; the same command resumes from there.

Input lines end with "\n" (a "\r" before it is dropped); output lines end with "\n".

Documents (subtitles, office files, HTML, Markdown) are translated by
:func:`~rnnmt.serving.batch.documents.run_document` with the same checkpoint and chunk machinery
(:func:`translate_chunks`), their texts for lines.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

from rnnmt.errors import RnnmtError
from rnnmt.progress import Progress
from rnnmt.scoring import Scores, score
from rnnmt.serving.batch.backends import Backend, ModelFacts
from rnnmt.serving.batch.checkpoint import Checkpoint, JobState
from rnnmt.serving.batch.chunk import ChunkResult, RetryPolicy, translate_chunk
from rnnmt.serving.batch.formats import LineFormat
from rnnmt.serving.batch.paragraphs import starts_block, translate_paragraphs
from rnnmt.serving.batch.shards import shard_range
from rnnmt.serving.core.options import Decoding

BLOCK_BYTES = 1 << 20
CHUNK_LINES = 64  # lines per request, by default
T = TypeVar("T")


@dataclass(frozen=True)
class BatchJob:
    """What to translate, where to, and how (see `rnnmt batch --help` for each field)."""

    input: Path
    output: Path
    fmt: LineFormat = field(default_factory=LineFormat)
    decoding: Decoding = field(default_factory=Decoding)
    shard: tuple[int, int] = (1, 1)
    chunk_lines: int = CHUNK_LINES
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    restart: bool = False
    split_sentences: bool = False  # each line sentence by sentence
    paragraphs: bool = False  # a document of paragraphs (:mod:`~rnnmt.serving.batch.paragraphs`)
    document: str = ""  # a document of this format, e.g. ".docx" (:mod:`~rnnmt.serving.batch.documents`)

    @property
    def splits(self) -> bool:
        """Whether the backend translates each text sentence by sentence."""
        return self.split_sentences or self.paragraphs or bool(self.document)


@dataclass(frozen=True)
class BatchResult:
    """The job's final checkpoint state; lines translated by this run and how long it took."""

    state: JobState
    translated: int
    seconds: float
    already_done: bool


@dataclass(frozen=True)
class InputFacts:
    lines: int
    bytes: int
    sha256: str


def scan(path: Path) -> InputFacts:
    """Count the lines of ``path`` (an unterminated last line counts) and hash it, in one pass."""
    digest, lines, size, last = hashlib.sha256(), 0, 0, b"\n"
    try:
        with path.open("rb") as f:
            while block := f.read(BLOCK_BYTES):
                digest.update(block)
                lines += block.count(b"\n")
                size += len(block)
                last = block[-1:]
    except OSError as exc:
        raise RnnmtError(f"cannot read {path}: {exc.strerror}") from None
    return InputFacts(lines + (last != b"\n"), size, digest.hexdigest())


def strip_line_end(raw: bytes) -> bytes:
    """An input line without its "\\n" and a "\\r" before it."""
    return raw.removesuffix(b"\n").removesuffix(b"\r")


def line_offset(path: Path, line: int) -> int:
    """The byte offset where line ``line`` (from 0) of ``path`` starts."""
    offset, remaining = 0, line
    with path.open("rb") as f:
        while remaining and (block := f.read(BLOCK_BYTES)):
            count = block.count(b"\n")
            if count < remaining:
                remaining -= count
                offset += len(block)
                continue
            at = -1
            for _ in range(remaining):
                at = block.index(b"\n", at + 1)
            return offset + at + 1
    return offset


@dataclass(frozen=True)
class Chunk(Generic[T]):
    """Input lines (bytes without their line endings), or a document's texts, from ``first_line``."""

    first_line: int
    lines: list[T]
    end_offset: int  # where the line after the chunk starts (0 for a document's texts)


def read_chunks(
    path: Path, offset: int, line: int, end_line: int, size: int, paragraphs: bool = False
) -> Iterator[Chunk[bytes]]:
    """Chunks of at most ``size`` texts from line ``line`` (at byte ``offset``) up to ``end_line``: a
    text is a line, or with ``paragraphs`` a block (:func:`~rnnmt.serving.batch.paragraphs.starts_block`;
    blank lines go with the block before them), so a chunk never ends inside one."""
    lines: list[bytes] = []
    texts, first, previous = 0, line, ""
    with path.open("rb") as f:
        f.seek(offset)
        while line < end_line:
            raw = f.readline()
            if not raw:
                raise RnnmtError(f"{path} ended before line {line + 1}: it changed")
            current = strip_line_end(raw)
            if paragraphs:
                text = current.decode("utf-8", errors="replace")
                starts, previous = starts_block(previous, text), text
            else:
                starts = True
            if starts and texts == size:
                yield Chunk(first, lines, offset)
                lines, texts, first = [], 0, line
            texts += starts
            lines.append(current)
            offset += len(raw)
            line += 1
    if lines:
        yield Chunk(first, lines, offset)


@contextmanager
def writing(output: Path) -> Iterator[None]:
    """The block's :class:`OSError` (a full disk, ...) as an :class:`RnnmtError` naming the file."""
    try:
        yield
    except OSError as exc:
        raise RnnmtError(f"cannot write {exc.filename or output}: {exc.strerror}") from None


def check(job: BatchJob) -> None:
    """Refuse settings no job runs with."""
    if job.chunk_lines < 1 or job.concurrency < 1:
        raise RnnmtError("--chunk-lines and --concurrency must be at least 1")
    if job.output.resolve() == job.input.resolve():
        raise RnnmtError(f"--out {job.output} is the input file")


def open_model(job: BatchJob, backend: Backend, stop: threading.Event) -> ModelFacts:
    """Open ``backend`` (retrying), and refuse chunks over its request limit."""
    model = job.retry.call(backend.open, stop)
    if model.max_texts_per_request and job.chunk_lines > model.max_texts_per_request:
        raise RnnmtError(
            f"--chunk-lines {job.chunk_lines} is over the server's limit of "
            f"{model.max_texts_per_request} texts per request"
        )
    return model


def translation_identity(job: BatchJob, model: ModelFacts) -> dict[str, Any]:
    """What a job's checkpoint records about how it translates: decoding, model and its version."""
    return {
        "decoding": asdict(job.decoding),
        "model": model.name,
        "model_version": model.version,
        **({"split_sentences": True} if job.splits else {}),
    }


@contextmanager
def resumable(checkpoint: Checkpoint, unit: str) -> Iterator[None]:
    """Close ``checkpoint`` after the block; an :class:`RnnmtError` in it says how much is saved."""
    try:
        yield
    except RnnmtError as exc:
        state = checkpoint.state
        raise RnnmtError(
            f"{exc}\n{state.next_line - state.start_line:,} of {state.lines:,} {unit} are done and saved; "
            "run the same command again to resume"
        ) from None
    finally:
        checkpoint.close()


def run(job: BatchJob, backend: Backend, stream: TextIO | None = None) -> BatchResult:
    """Run (or resume) ``job`` on ``backend``, showing progress on ``stream`` (default stderr)."""
    check(job)
    if job.paragraphs and (job.fmt.kind != "plain" or job.shard != (1, 1)):
        raise RnnmtError(
            "--paragraphs translates a plain-text document whole: not with --tsv-column, --jsonl-field "
            "or --shard"
        )
    start_time = time.monotonic()
    facts = scan(job.input)
    stop = threading.Event()
    model = open_model(job, backend, stop)
    start, end = shard_range(facts.lines, job.shard)
    identity = {
        "input_sha256": facts.sha256,
        "input_bytes": facts.bytes,
        "input_lines": facts.lines,
        "format": asdict(job.fmt),
        **translation_identity(job, model),
        **({"paragraphs": True} if job.paragraphs else {}),
    }
    fresh = JobState(identity, job.shard, start, end, start, line_offset(job.input, start))
    with writing(job.output):
        checkpoint = Checkpoint.open(job.output, fresh, job.restart)
    if checkpoint.state.done:
        checkpoint.close()
        return BatchResult(checkpoint.state, 0, time.monotonic() - start_time, already_done=True)

    def work(lines: list[bytes]) -> ChunkResult:
        if job.paragraphs:
            return translate_paragraphs(backend, lines, job.retry, stop)
        return translate_chunk(backend, job.fmt, lines, job.retry, stop)

    with resumable(checkpoint, "lines"):
        state = checkpoint.state
        chunks = read_chunks(
            job.input, state.input_offset, state.next_line, state.end_line, job.chunk_lines, job.paragraphs
        )
        translated = translate_chunks(job, chunks, work, checkpoint, stop, "lines", stream)
        with writing(job.output):
            checkpoint.finish()
    return BatchResult(checkpoint.state, translated, time.monotonic() - start_time, already_done=False)


def translate_chunks(
    job: BatchJob,
    chunks: Iterable[Chunk[T]],
    work: Callable[[list[T]], ChunkResult],
    checkpoint: Checkpoint,
    stop: threading.Event,
    unit: str,
    stream: TextIO | None,
) -> int:
    """Translate the remaining ``chunks`` with ``work``, ``job.concurrency`` at once, and commit them in
    order, each output line ending with "\n"; returns the ``unit`` (lines, texts) translated. The first
    error of any chunk stops the others and is raised."""
    state = checkpoint.state
    progress = Progress(state.end_line - state.next_line, unit, stream)
    resumed = (
        {"resumed after": f"{state.next_line - state.start_line:,}"}
        if state.next_line > state.start_line
        else {}
    )
    first_error: list[BaseException] = []
    lock = threading.Lock()

    def guarded(items: list[T]) -> ChunkResult:
        try:
            return work(items)
        except BaseException as exc:
            with lock:
                if not stop.is_set():
                    first_error.append(exc)
                    stop.set()
            raise

    translated = 0

    def commit(chunk: Chunk[T], future: Future[ChunkResult]) -> None:
        nonlocal translated
        result = future.result()
        data = "".join(line + "\n" for line in result.lines).encode()
        failures = [(chunk.first_line + i, reason) for i, reason in result.failures]
        with writing(job.output):
            checkpoint.commit(data, failures, chunk.first_line + len(chunk.lines), chunk.end_offset)
        translated += len(chunk.lines)
        failed = checkpoint.state.failed
        progress.update(translated, None, False, **resumed, **({"failed": f"{failed:,}"} if failed else {}))

    pending: deque[tuple[Chunk[T], Future[ChunkResult]]] = deque()
    pool = ThreadPoolExecutor(job.concurrency, thread_name_prefix="rnnmt-batch")
    try:
        for chunk in chunks:
            pending.append((chunk, pool.submit(guarded, chunk.lines)))
            if len(pending) >= 2 * job.concurrency:
                commit(*pending.popleft())
        while pending:
            commit(*pending.popleft())
        progress.update(translated, None, True, **resumed)
    except BaseException:
        stop.set()
        if first_error:
            raise first_error[0] from None
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return translated


def score_output(job: BatchJob, state: JobState, reference: Path) -> Scores:
    """BLEU and chrF of the job's translations against ``reference`` (one line per input line)."""
    try:
        with reference.open("rb") as f:
            references = [strip_line_end(raw).decode() for raw in f]
        with job.output.open("rb") as f:
            hypotheses = [job.fmt.translation(raw.removesuffix(b"\n").decode()) for raw in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise RnnmtError(f"cannot read {reference} or {job.output}: {exc}") from None
    if len(references) != state.job["input_lines"]:
        raise RnnmtError(
            f"--reference {reference} has {len(references):,} lines, the input {state.job['input_lines']:,}"
        )
    return score(hypotheses, references[state.start_line : state.end_line])
