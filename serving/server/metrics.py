"""What a server records: Prometheus metrics and one JSON log line per request.

A *request* is a unary call, one message of a TranslateStream, or a call refused before it reached its
handler (authentication, a malformed message): each one is counted by method and status code, timed,
and logged as one JSON object per line. Each server has its own registry, so several servers can live in
one process. The server serves them over HTTP on its event loop
(:class:`~rnnmt.serving.http.server.HttpServer`, the ASGI application of ``prometheus_client``).

`rnnmt serve` writes nothing but JSON lines to stderr: :func:`log_json_to_stderr` sends the log records
there, and :func:`stderr_as_json` turns whatever else writes to file descriptor 2 (gRPC's C core,
onnxruntime, Python tracebacks) into log records too. Messages that clients can make repeat without
bound (:data:`REPEATED`) are logged once a minute at most, with a count of those left out.
"""

from __future__ import annotations

import collections
import faulthandler
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REQUEST_LOGGER = "rnnmt.serving.requests"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CORE_LINE = re.compile(r"([EWIF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ +([^\] ]+)\] ?(.*)")
"""A log line of gRPC's C core (absl): ``E1202 02:50:40.269000   1234 file.cc:56] message``."""
CORE_LEVELS = {"E": logging.ERROR, "W": logging.WARNING, "I": logging.INFO, "F": logging.CRITICAL}
REPEATED = {
    "asyncio": ("socket.accept() out of system resource",),  # once per accept tried, out of descriptors
    "uvicorn.error": (
        "Invalid HTTP request received.",
        "Unsupported upgrade request.",
        "No supported WebSocket library detected.",
    ),
    "rnnmt.serving.http.protocol": ("HTTP connection refused",),
}
"""Per logger, the beginnings of the messages that :func:`log_json_to_stderr` rate-limits: those a client
(or a flood of connections) can make repeat as often as it likes."""
REPEAT_SECONDS = 60.0


class Metrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rnnmt_requests", "Requests by method and gRPC status code.", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "rnnmt_request_latency_seconds",
            "Time from receiving a request to its response (or error), by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queued = Gauge("rnnmt_queue_sentences", "Sentences waiting for an engine worker.", registry=r)
        self.batch_rows = Histogram(
            "rnnmt_batch_rows", "Rows (sentences × beam) per engine batch.", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "rnnmt_batch_seconds", "Translator time per batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.received = Counter(
            "rnnmt_sentences_received",
            "Sentences accepted into the queue, by model and version.",
            ["model", "version"],
            registry=r,
        )
        self.sentences = Counter(
            "rnnmt_sentences_translated",
            "Sentences translated, by model and version.",
            ["model", "version"],
            registry=r,
        )
        self.tokens = Counter(
            "rnnmt_tokens_translated",
            "Tokens translated by model, version and side (source pieces read, target pieces written).",
            ["model", "version", "side"],
            registry=r,
        )
        self.dropped = Counter(
            "rnnmt_sentences_dropped",
            "Queued sentences dropped untranslated, by reason (deadline, cancelled, shutdown).",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter(
            "rnnmt_model_reloads",
            "Reloads of the model repository, by result (ok, or failed: a package did not load).",
            ["result"],
            registry=r,
        )
        self.load_failures = Counter(
            "rnnmt_model_load_failures",
            "Packages that failed to load on a reload (the version they would replace kept serving).",
            ["model", "version"],
            registry=r,
        )
        self.served = Gauge(
            "rnnmt_model_served",
            "1 for each model version served.",
            ["model", "version", "content"],
            registry=r,
        )
        self.key_calls = Counter(
            "rnnmt_api_key_calls",
            "Translation calls by API key name (never the key) and result: ok, limited (over a limit,"
            " refused with RESOURCE_EXHAUSTED / 429) or too_large (more characters than a minute's).",
            ["key", "result"],
            registry=r,
        )
        self.key_characters = Counter(
            "rnnmt_api_key_characters",
            "Characters of the calls each API key name was let through with.",
            ["key"],
            registry=r,
        )
        self.unfreed = Gauge(
            "rnnmt_models_unloaded_unfreed",
            "Models a reload stopped serving that a call still holds: their memory goes back to the system"
            " when the last call lets go of them.",
            registry=r,
        )

    def serving(self, versions: Iterable[tuple[str, str, str]]) -> None:
        """Set the served gauge to these (model, version, content version) triples, and only these."""
        self.served.clear()
        for labels in versions:
            self.served.labels(*labels).set(1)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        """Report ``depth()`` as the queue gauge whenever metrics are scraped."""
        self.queued.set_function(depth)

    def record(
        self, method: str, code: str, seconds: float, *, model: str = "", texts: int = 0, peer: str = ""
    ) -> None:
        """Count, time and log one request (``code`` is a grpc.StatusCode name such as ``"OK"``)."""
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)
        logging.getLogger(REQUEST_LOGGER).info(
            "request",
            extra={
                "fields": {
                    "method": method,
                    "model": model,
                    "texts": texts,
                    "status": code,
                    "latency_ms": round(seconds * 1000, 3),
                    "peer": peer,
                }
            },
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's ``fields`` and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class JsonLineHandler(logging.Handler):
    """Writes each record as one JSON line with a single ``write`` to the file descriptor ``fd``, so
    records stay whole lines whatever else writes to the same file."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode()
        except Exception:
            self.handleError(record)
            return
        try:
            while data:  # one write, unless a signal interrupts it midway
                data = data[os.write(self.fd, data) :]
        except OSError:
            pass  # the log stream itself is gone: there is nowhere left to report it


class RepeatFilter(logging.Filter):
    """Lets through one record of each of ``messages`` (their beginnings) per ``seconds``; the next one
    let through after records were left out says how many, in its ``suppressed`` field. Other records
    pass."""

    def __init__(
        self, messages: Iterable[str], seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.messages, self.seconds, self.clock = tuple(messages), seconds, clock
        self._last: dict[str, float] = {}  # message → when one was last let through
        self._suppressed: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        message = next((m for m in self.messages if text.startswith(m)), None)
        if message is None:
            return True
        now = self.clock()
        with self._lock:
            if message in self._last and now - self._last[message] < self.seconds:
                self._suppressed[message] += 1
                return False
            self._last[message] = now
            suppressed = self._suppressed.pop(message, 0)
        if suppressed:
            record.fields = {**getattr(record, "fields", {}), "suppressed": suppressed}
        return True


def log_json_to_stderr(level: int = logging.INFO) -> None:
    """Send this process's log records, from ``level`` on, to stderr as JSON lines, the messages of
    :data:`REPEATED` once per :data:`REPEAT_SECONDS` at most (once per process).

    The handler writes to a duplicate of file descriptor 2, which :func:`stderr_as_json` leaves alone.
    """
    root = logging.getLogger()
    if not any(isinstance(h, JsonLineHandler) for h in root.handlers):
        root.addHandler(JsonLineHandler(os.dup(2)))
        for name, messages in REPEATED.items():
            logging.getLogger(name).addFilter(RepeatFilter(messages, REPEAT_SECONDS))
    root.setLevel(level)


@contextmanager
def stderr_as_json() -> Iterator[None]:
    """Make every line written to file descriptor 2 meanwhile a log record (C code's writes included).

    Descriptor 2 becomes a pipe, read by a thread that logs each line: a gRPC C-core line under the
    logger ``grpc`` at its own level, any other under ``stderr`` as a warning. Use it after
    :func:`log_json_to_stderr`, whose records bypass descriptor 2. On exit the descriptor is restored
    and the thread reads the pipe to its end.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    # A crash would lose what is still in the pipe: the fault handler writes its stack traces (plain
    # text, the one exception to JSON) straight to the real stderr.
    faulthandler.enable(file=saved, all_threads=True)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_log_lines, args=(read_end,), name="stderr-as-json", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        faulthandler.disable()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader gets to its end
        os.close(saved)
        reader.join(timeout=5)


def _log_lines(fd: int) -> None:
    """Log each line read from ``fd`` (see :func:`stderr_as_json`) until the pipe ends."""
    with open(fd, "rb") as pipe:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip()
            if match := CORE_LINE.fullmatch(line):
                level, source, message = match.groups()
                logging.getLogger("grpc").log(
                    CORE_LEVELS[level], message, extra={"fields": {"source": source}}
                )
            elif line:
                logging.getLogger("stderr").warning(line)
