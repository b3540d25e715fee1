"""The checkpoint of a batch job: an output that grows only by whole chunks, in input order, and a
progress file that says, atomically, how much of it is final.

A commit appends a chunk's output lines to ``OUTPUT`` and fsyncs it, appends the chunk's failed lines to
``OUTPUT.errors.jsonl`` (``{"line": N, "reason": …}``, N counted from 1) and fsyncs it, then replaces
``OUTPUT.progress`` (a temporary file, fsync'd, renamed over it, the folder fsync'd) with the new sizes of
both files and the next input line with its byte offset. The rename is the commit point: whatever a
stopped job wrote after its last commit lies beyond the recorded sizes, and resuming truncates it away and
goes on from the recorded line. So every input line is in the output exactly once, in order, wherever the
job was killed.

``OUTPUT.progress`` holds (JSON): ``job`` (what must not change between runs: the input's sha256, size
and line count, the line format, the decoding options, the model and its version), ``shard`` ``[k, n]``,
``start_line`` / ``end_line`` (this job's input lines, 0-based, end excluded), ``next_line`` and
``input_offset`` (the first line not done and where it starts), ``output_bytes``, ``errors_bytes``,
``failed`` and ``done``. It stays after the job is done, so running the job again finds nothing to do.

A document job (:mod:`~rnnmt.serving.batch.documents`) counts its texts as lines and commits its
translations to ``OUTPUT.texts.jsonl`` instead; its errors records say ``text`` instead of ``line``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from rnnmt.errors import RnnmtError

FORMAT = "rnnmt-batch-progress"
VERSION = 1


def progress_path(output: Path) -> Path:
    return output.with_name(output.name + ".progress")


def errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def error_record(line: int, reason: str, unit: str = "line") -> str:
    """The line of an errors file for input line ``line`` (counted from 0; with ``unit`` "text": a
    document's text) that failed for ``reason``."""
    return json.dumps({unit: line + 1, "reason": reason}, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class JobState:
    """The content of a progress file; see the module docstring."""

    job: dict[str, Any]
    shard: tuple[int, int]
    start_line: int
    end_line: int
    next_line: int
    input_offset: int
    output_bytes: int = 0
    errors_bytes: int = 0
    failed: int = 0
    done: bool = False

    @property
    def lines(self) -> int:
        return self.end_line - self.start_line


def read_state(output: Path) -> JobState | None:
    """The progress file of ``output``, or ``None`` if there is none."""
    path = progress_path(output)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RnnmtError(f"cannot read {path}: {exc}; --restart starts the job over") from None
    if (
        not isinstance(data, dict)
        or data.pop("format", None) != FORMAT
        or data.pop("version", None) != VERSION
    ):
        raise RnnmtError(
            f"{path} is not a progress file of this rnnmt version; --restart starts the job over"
        )
    try:
        return JobState(**{**data, "shard": tuple(data["shard"])})
    except (TypeError, KeyError) as exc:
        raise RnnmtError(f"{path} is damaged ({exc}); --restart starts the job over") from None


def temporary_path(path: Path) -> Path:
    """Where a file is written before :func:`publish` renames it to ``path``."""
    return path.with_name(path.name + ".tmp")


def publish(path: Path) -> None:
    """Make the written ``temporary_path(path)`` durable, rename it over ``path`` and make the rename
    durable: ``path`` is either the old file or the whole new one, even across a crash."""
    temporary = temporary_path(path)
    with temporary.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_state(output: Path, state: JobState) -> None:
    """Replace the progress file atomically and durably."""
    path = progress_path(output)
    temporary_path(path).write_text(
        json.dumps({"format": FORMAT, "version": VERSION, **asdict(state)}, indent=1)
    )
    publish(path)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key (old ≠ new)`` for every leaf of two nested dicts that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            item
            for key in sorted(old.keys() | new.keys())
            for item in differences(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [f"{prefix.rstrip('.')} ({old} ≠ {new})"]


def _open_at(path: Path, size: int) -> BinaryIO:
    """``path`` opened to append after its first ``size`` bytes (the rest is cut off)."""
    f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+b")
    actual = f.seek(0, os.SEEK_END)
    if actual < size:
        f.close()
        raise RnnmtError(
            f"{path} has {actual} bytes but its progress file says {size} were written: it was changed "
            "outside the job; --restart starts the job over"
        )
    f.truncate(size)
    f.seek(size)
    return f


class Checkpoint:
    """The output, errors and progress files of one job, positioned after its last commit; :attr:`state`
    is what the progress file holds.

    ``data`` is the file that commits append to, ``output`` itself unless given (a document job appends
    its translations to a file beside the document it writes at the end); ``unit`` names the records of
    the errors file (``line``, or ``text`` for a document's texts). The files of a job that is done are
    left as they are, unopened (a document job has removed its ``data``)."""

    def __init__(self, output: Path, state: JobState, data: Path | None = None, unit: str = "line") -> None:
        self.output = output
        self.state = state
        self.unit = unit
        self._out: BinaryIO | None = None
        self._errors: BinaryIO | None = None
        if state.done:
            return
        self._out = _open_at(data or output, state.output_bytes)
        errors = errors_path(output)
        if state.errors_bytes:
            self._errors = _open_at(errors, state.errors_bytes)
        else:
            errors.unlink(missing_ok=True)

    @classmethod
    def open(
        cls, output: Path, fresh: JobState, restart: bool, data: Path | None = None, unit: str = "line"
    ) -> Checkpoint:
        """Resume the job recorded beside ``output``, or start ``fresh`` (with ``restart``: always);
        ``data`` and ``unit`` as in the class docstring.

        Refuses a progress file of another job, and an existing output without a progress file.
        """
        existing = None if restart else read_state(output)
        if existing is None:
            if not restart and output.exists():
                raise RnnmtError(
                    f"{output} exists but is not a batch job's output ({progress_path(output).name} is "
                    "missing); --restart overwrites it"
                )
            output.parent.mkdir(parents=True, exist_ok=True)
            write_state(output, fresh)  # before the output exists, so a job killed now can resume
            return cls(output, fresh, data, unit)
        changed = differences(existing.job, fresh.job) + differences(
            {"shard": list(existing.shard)}, {"shard": list(fresh.shard)}
        )
        if changed:
            raise RnnmtError(
                f"{progress_path(output)} belongs to another job: {'; '.join(changed)}. "
                "--restart starts this job over, or choose another --out"
            )
        return cls(output, existing, data, unit)

    def commit(self, data: bytes, failures: list[tuple[int, str]], next_line: int, input_offset: int) -> None:
        """Append a chunk's output ``data`` and ``failures`` (input line index from 0, reason); then
        record that input lines before ``next_line`` (starting at byte ``input_offset``) are done."""
        if self._out is None:
            raise RnnmtError(f"{self.output}: the job is done; nothing more is committed")
        self._out.write(data)
        self._out.flush()
        os.fsync(self._out.fileno())
        errors_bytes = self.state.errors_bytes
        if failures:
            if self._errors is None:
                self._errors = _open_at(errors_path(self.output), 0)
            records = "".join(error_record(line, reason, self.unit) for line, reason in failures).encode()
            self._errors.write(records)
            self._errors.flush()
            os.fsync(self._errors.fileno())
            errors_bytes += len(records)
        self._record(
            replace(
                self.state,
                next_line=next_line,
                input_offset=input_offset,
                output_bytes=self.state.output_bytes + len(data),
                errors_bytes=errors_bytes,
                failed=self.state.failed + len(failures),
            )
        )

    def finish(self) -> None:
        """Record that every line is done."""
        self._record(replace(self.state, done=True))

    def _record(self, state: JobState) -> None:
        """Write ``state`` to the progress file, then make it :attr:`state`: a write that fails (a full
        disk) leaves :attr:`state` what the progress file durably holds, which a stopped job reports."""
        write_state(self.output, state)
        self.state = state

    def close(self) -> None:
        for f in (self._out, self._errors):
            if f is not None:
                f.close()
