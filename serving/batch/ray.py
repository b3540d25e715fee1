"""Batch translation on a Ray cluster with Ray Data (the optional extra ``rnnmt[ray]``): files → lines →
the in-process engine in ``map_batches`` (a callable class: one engine per worker) → one output per file.

::

    import ray
    from rnnmt.serving.batch.ray import translate_files

    ray.init()  # a local cluster; on a cluster: ray.init(address="auto"), or `ray job submit`
    translate_files([Path("a.es"), Path("b.es")], Path("out"), Path("models/toy"), workers=4)

Lines are read by a datasource that splits on "\\n" only, as `rnnmt batch` does (Ray's ``read_text``
splits on every Unicode line break and reads each file whole), in blocks whose rows carry their line
numbers. Workers translate ``chunk_lines`` lines at a time exactly as `rnnmt batch` does (same formats,
same isolation of refused lines), so the outputs are the same. The driver gets the results in input order
(Ray Data's ``preserve_order``), checks that every line came back once, in order, and writes
``OUT_DIR/<input name>`` and, when lines failed, ``<input name>.errors.jsonl`` beside it.

Every worker must see the model package and the inputs at the same paths (a shared folder or a copy).
Ray retries failed tasks and replaces lost workers. Resumption is per file: an output appears (by rename)
only when complete, and inputs whose output exists are skipped; for checkpoints within a file, run
`rnnmt batch` (with ``--shard`` on several machines).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.datasource import FileBasedDatasource

from rnnmt.errors import RnnmtError
from rnnmt.serving.batch.backends import EngineBackend
from rnnmt.serving.batch.checkpoint import error_record, errors_path, publish, temporary_path
from rnnmt.serving.batch.chunk import RetryPolicy, translate_chunk
from rnnmt.serving.batch.formats import LineFormat
from rnnmt.serving.batch.job import BLOCK_BYTES, CHUNK_LINES, scan, strip_line_end
from rnnmt.serving.core.options import Decoding


class LineDatasource(FileBasedDatasource):
    """The lines of text files as rows ``path``, ``line`` (from 0) and ``raw`` (bytes, no line ending),
    in blocks of ``block_lines`` rows."""

    def __init__(self, paths: list[str], block_lines: int) -> None:
        super().__init__(paths, include_paths=True)
        self.block_lines = block_lines

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        number, rest, lines = 0, b"", []
        while data := f.read(BLOCK_BYTES):
            *complete, rest = (rest + data).split(b"\n")
            lines += [strip_line_end(raw) for raw in complete]
            while len(lines) >= self.block_lines:
                yield self._block(number, lines[: self.block_lines])
                number, lines = number + self.block_lines, lines[self.block_lines :]
        if rest:
            lines.append(strip_line_end(rest))
        if lines:
            yield self._block(number, lines)

    @staticmethod
    def _block(first: int, lines: list[bytes]) -> pa.Table:
        numbers = pa.array(range(first, first + len(lines)), pa.int64())
        return pa.table({"line": numbers, "raw": pa.array(lines, pa.binary())})


class EngineTranslator:
    """The ``map_batches`` callable: loads the engine once per worker, then translates batches of rows
    into rows ``path``, ``line``, ``output`` (the output line) and ``error`` ("" or why the line failed)."""

    def __init__(
        self, model_dir: str, model_name: str, decoding: Decoding, fmt: LineFormat, threads: int
    ) -> None:
        self.backend = EngineBackend(Path(model_dir), model_name, decoding, threads)
        self.fmt = fmt
        self.never = threading.Event()  # the engine raises no transient errors to stop retrying

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw_lines = [bytes(raw) for raw in batch["raw"]]
        result = translate_chunk(self.backend, self.fmt, raw_lines, RetryPolicy(), self.never)
        errors = [""] * len(raw_lines)
        for i, reason in result.failures:
            errors[i] = reason
        return {
            "path": batch["path"],
            "line": batch["line"],
            "output": np.array(result.lines, dtype=object),
            "error": np.array(errors, dtype=object),
        }


@dataclass
class FileResult:
    lines: int = 0
    failed: int = 0


@dataclass
class _OutputFile:
    """One output being written under a temporary name, with its errors."""

    source: Path
    target: Path
    expected_lines: int
    result: FileResult = field(default_factory=FileResult)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.file: BinaryIO = temporary_path(self.target).open("wb")

    def add(self, line: int, output: str, error: str) -> None:
        if line != self.result.lines:
            raise RnnmtError(
                f"{self.source}: line {line + 1} came back where line {self.result.lines + 1} belongs"
            )
        self.file.write(output.encode() + b"\n")
        self.result.lines += 1
        if error:
            self.result.failed += 1
            self.errors.append(error_record(line, error))

    def finish(self) -> FileResult:
        self.file.close()
        if self.result.lines != self.expected_lines:
            raise RnnmtError(
                f"{self.source}: {self.result.lines} of its {self.expected_lines} lines came back"
            )
        errors = errors_path(self.target)
        if self.errors:
            temporary_path(errors).write_text("".join(self.errors))
            publish(errors)
        else:
            errors.unlink(missing_ok=True)
        publish(self.target)
        return self.result


def translate_files(
    inputs: Sequence[Path],
    out_dir: Path,
    model_dir: Path,
    *,
    model_name: str = "",
    decoding: Decoding | None = None,
    fmt: LineFormat | None = None,
    workers: int = 2,
    chunk_lines: int = CHUNK_LINES,
    engine_threads: int = 1,
) -> dict[Path, FileResult]:
    """Translate each input file into ``out_dir`` on the Ray cluster this process is connected to (a
    local one if none), with ``workers`` engine workers of one CPU each; returns what each file gave
    (inputs skipped because their output exists are not listed)."""
    decoding = decoding or Decoding()
    names = [p.name for p in inputs]
    if len(set(names)) != len(names):
        raise RnnmtError("the inputs must have different file names: their outputs go to one folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = {p.resolve(): out_dir / p.name for p in inputs if not (out_dir / p.name).exists()}
    results: dict[Path, FileResult] = {}
    if not todo:
        return results
    # reading is light: it must not wait for the CPUs the engine workers hold
    dataset = ray.data.read_datasource(LineDatasource([str(p) for p in todo], chunk_lines), num_cpus=0)
    dataset = dataset.map_batches(
        EngineTranslator,
        fn_constructor_kwargs={
            "model_dir": str(model_dir.resolve()),
            "model_name": model_name,
            "decoding": decoding,
            "fmt": fmt or LineFormat(n_best=max(1, decoding.n_best)),
            "threads": engine_threads,
        },
        batch_size=chunk_lines,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    dataset.context.execution_options.preserve_order = True
    current: _OutputFile | None = None
    current_path = ""
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for path, line, output, error in zip(
            batch["path"], batch["line"], batch["output"], batch["error"], strict=True
        ):
            if current is None or path != current_path:
                if current is not None:
                    results[current.source] = current.finish()
                source, current_path = Path(path).resolve(), path
                if source in results:
                    raise RnnmtError(f"{source}: its lines came back in two separate stretches")
                current = _OutputFile(source, todo[source], scan(source).lines)
            current.add(int(line), output, error)
    if current is not None:
        results[current.source] = current.finish()
    for source, target in todo.items():  # files without lines have no rows
        if source not in results:
            results[source] = _OutputFile(source, target, scan(source).lines).finish()
    return results
