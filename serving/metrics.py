"""What a server records: Prometheus metrics and one JSON log line per request.

A *request* is a unary call, one message of a TranslateStream, or a call refused before it reached its
handler (authentication): each one is counted by method and status code, timed, and logged as one JSON
object per line. Each server has its own registry, so several servers can live in one process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REQUEST_LOGGER = "rnnmt.serving.requests"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


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
            "rnnmt_batch_seconds", "Engine time per batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.received = Counter(
            "rnnmt_sentences_received", "Sentences accepted into the queue, by model.", ["model"], registry=r
        )
        self.sentences = Counter(
            "rnnmt_sentences_translated", "Sentences translated, by model.", ["model"], registry=r
        )
        self.tokens = Counter(
            "rnnmt_tokens_translated",
            "Tokens translated by model and side (source pieces read, target pieces written).",
            ["model", "side"],
            registry=r,
        )
        self.dropped = Counter(
            "rnnmt_sentences_dropped",
            "Queued sentences dropped untranslated, by reason (deadline, cancelled, shutdown).",
            ["reason"],
            registry=r,
        )
        self._http: ThreadingHTTPServer | None = None

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

    def serve(self, host: str, port: int) -> None:
        """Expose the metrics at ``http://host:port/metrics`` from a background thread."""
        self._http, _ = start_http_server(port, host, registry=self.registry)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


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


def log_json_to_stderr(level: int = logging.INFO) -> None:
    """Send rnnmt's log records to stderr as JSON lines (once per process)."""
    logger = logging.getLogger("rnnmt")
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
