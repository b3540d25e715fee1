"""One chunk of a batch job: read the texts of its lines, translate them with retries, find the lines a
backend refuses, and render the output lines.

A chunk goes to the backend as one request. Transient failures are retried with exponential backoff and
jitter, up to a limit. If the request is refused (:class:`Rejected`), its texts are sent again one by one,
so only the lines at fault fail: each is listed with its reason and gets an empty translation. Blank
lines stay blank and are never sent; lines that cannot be read in their format fail without being sent.
Any other text is sent, a blank one too (a TSV cell, a JSONL field): the translator gives a text without
pieces one empty translation scored 0.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from rnnmt.errors import RnnmtError
from rnnmt.serving.batch.backends import Backend, Rejected, Transient
from rnnmt.serving.batch.formats import LineError, LineFormat
from rnnmt.serving.core.translator import TextHypothesis

T = TypeVar("T")
logger = logging.getLogger(__name__)


class Stopped(RnnmtError):
    """The job is stopping (another chunk failed): this chunk's retries were abandoned."""


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``retries`` retries of transient failures, waiting ``backoff`` seconds, doubling up to
    ``max_backoff``, each wait scaled by a random factor in [0.5, 1] so that clients spread out. Each
    retry is logged as a warning (on stderr, from the command line)."""

    retries: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0

    def call(self, fn: Callable[[], T], stop: threading.Event) -> T:
        """``fn()``, retried on :class:`Transient`; an :class:`RnnmtError` once the retries are spent."""
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return fn()
            except Transient as exc:
                if attempt == self.retries:
                    raise RnnmtError(
                        f"gave up after {self.retries} retries in {time.monotonic() - start:.0f} s: {exc}"
                    ) from None
                delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
                logger.warning("%s; retry %d of %d in %.1f s", exc, attempt + 1, self.retries, delay)
            if stop.wait(delay):
                raise Stopped("stopped")
            attempt += 1


@dataclass(frozen=True)
class ChunkResult:
    """The rendered output lines of a chunk, and the failed ones as (index in the chunk, reason)."""

    lines: list[str]
    failures: list[tuple[int, str]]


def reason_of(message: str) -> str:
    """A refusal's message without the request's text index (``texts[3] is …`` → ``the text is …``)."""
    return re.sub(r"^texts\[\d+\]", "the text", message)


def translate_texts(
    backend: Backend, texts: list[str], retry: RetryPolicy, stop: threading.Event
) -> list[list[TextHypothesis] | str]:
    """Per text its hypotheses, or the reason it was refused (see the module docstring)."""
    try:
        return list(retry.call(lambda: backend.translate(texts), stop))
    except Rejected as exc:
        if len(texts) == 1:
            return [reason_of(str(exc))]
    results: list[list[TextHypothesis] | str] = []
    for text in texts:
        results += translate_texts(backend, [text], retry, stop)
    return results


def translate_chunk(
    backend: Backend,
    fmt: LineFormat,
    raw_lines: Sequence[bytes],
    retry: RetryPolicy,
    stop: threading.Event,
) -> ChunkResult:
    """Translate the lines of a chunk (UTF-8 bytes without their line endings) into output lines."""
    lines: list[str] = [""] * len(raw_lines)
    failures: list[tuple[int, str]] = []
    todo: list[tuple[int, str, str]] = []  # (index, line, text)
    for i, raw in enumerate(raw_lines):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            failures.append((i, f"the line is not valid UTF-8: {exc}"))
            continue
        if not line.strip():
            continue
        try:
            todo.append((i, line, fmt.source(line)))
        except LineError as exc:
            failures.append((i, f"the line {exc}"))
    if todo:
        results = translate_texts(backend, [text for _, _, text in todo], retry, stop)
        for (i, line, _), result in zip(todo, results, strict=True):
            if isinstance(result, str):
                failures.append((i, result))
                lines[i] = fmt.render(line, None)
            else:
                lines[i] = fmt.render(line, result)
    failures.sort()
    return ChunkResult(lines, failures)
