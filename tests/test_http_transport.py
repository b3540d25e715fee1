"""The HTTP doors' connections (the HTTP/JSON door and the metrics port) under what a client can do
before any authentication: mutual TLS as on gRPC, bounded heads (431), a bounded time to send a request
(408), idle connections closed, a cap on connections, no thread per connection on the metrics port, and
log lines a flood of connections repeats rate-limited. Real servers on local ports."""

from __future__ import annotations

import json
import logging
import resource
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import ServerThread, answer, running, scrape, wait_until

from rnnmt.serving.client import TranslatorClient
from rnnmt.serving.http import protocol
from rnnmt.serving.http.protocol import MAX_HEADER_BYTES, MAX_HEADERS, REFUSED
from rnnmt.serving.server.metrics import REPEATED, RepeatFilter

MODELS = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
"""The head of a request, but its last line."""


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def error(status: int, code: str, message: str) -> tuple[int, dict[str, object]]:
    return status, {"error": {"code": status, "status": code, "message": message}}


def models_status(port: int, head: bytes = MODELS) -> int:
    """The status of GET /v1/models sent with ``head`` (and ``Connection: close``); 0 if the server
    closed the connection without an answer."""
    with connect(port) as client:
        client.sendall(head + b"Connection: close\r\n\r\n")
        data = b""
        try:
            while chunk := client.recv(65536):
                data += chunk
        except ConnectionResetError:  # closed with the request unread
            return 0
    return int(data.split()[1]) if data else 0


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1, http_port=0, http_read_seconds=1, http_idle_seconds=60) as s:
        yield s


# -- mutual TLS -------------------------------------------------------------------------------------------


def test_the_http_door_requires_a_client_certificate_with_a_client_ca(
    model_dir: Path, certificates: Path
) -> None:
    tls = {"tls_cert": certificates / "server.pem", "tls_key": certificates / "server.key"}
    with running(model_dir, workers=1, http_port=0, tls_client_ca=certificates / "ca.pem", **tls) as s:
        anonymous = ssl.create_default_context(cafile=certificates / "ca.pem")
        signed = ssl.create_default_context(cafile=certificates / "ca.pem")
        signed.load_cert_chain(certificates / "client.pem", certificates / "client.key")
        assert https_models(s.server.http_port, anonymous) == b""
        assert https_models(s.server.http_port, signed).startswith(b"HTTP/1.1 200 ")


def https_models(port: int, context: ssl.SSLContext) -> bytes:
    """What the server answers GET /v1/models over TLS: nothing if it ends the connection (TLS 1.3 lets
    a client send its request before the server has checked its certificate)."""
    data = b""
    try:
        with connect(port) as raw, context.wrap_socket(raw, server_hostname="localhost") as client:
            client.sendall(MODELS + b"Connection: close\r\n\r\n")
            while chunk := client.recv(65536):
                data += chunk
    except OSError:  # the handshake refused, or the connection reset
        return data
    return data


# -- heads ------------------------------------------------------------------------------------------------


def test_a_head_over_the_limit_is_answered_431_and_one_at_the_limit_is_served(server: ServerThread) -> None:
    port = server.server.http_port
    padding = b"X-Padding: "
    full = MAX_HEADER_BYTES - len(MODELS + padding + b"\r\n" + b"Connection: close\r\n\r\n")
    assert models_status(port, MODELS + padding + b"a" * full + b"\r\n") == 200
    with connect(port) as client:  # one byte over, and the head never ends: its last byte makes it refused
        client.sendall(MODELS + padding + b"a" * (MAX_HEADER_BYTES + 1 - len(MODELS + padding)))
        assert answer(client) == error(
            431, "INVALID_ARGUMENT", f"the request's head is over {MAX_HEADER_BYTES} bytes"
        )


def test_more_headers_than_the_limit_are_answered_431(server: ServerThread) -> None:
    port = server.server.http_port
    headers = [b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS)]  # with Host and Connection: two over
    assert models_status(port, MODELS + b"".join(headers[:-2])) == 200
    with connect(port) as client:
        client.sendall(MODELS + b"".join(headers) + b"\r\n")
        assert answer(client) == error(431, "INVALID_ARGUMENT", f"the request has over {MAX_HEADERS} headers")


# -- time -------------------------------------------------------------------------------------------------


def test_a_head_or_a_body_sent_too_slowly_is_answered_408(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.server.http_port
    with connect(port) as client:
        client.sendall(MODELS)  # and never the blank line that ends the head
        assert answer(client) == error(408, "DEADLINE_EXCEEDED", "the request's head took over 1 s")
    with connect(port) as client:
        client.sendall(
            b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"texts": '
        )
        assert answer(client) == error(408, "DEADLINE_EXCEEDED", "the request's body took over 1 s")
    assert models_status(port) == 200
    assert not [r for r in caplog.records if r.exc_info]  # the call waiting for the body ended quietly


def test_a_connection_that_sends_nothing_is_closed(model_dir: Path) -> None:
    with running(model_dir, workers=1, http_port=0, http_idle_seconds=1) as s:
        with connect(s.server.http_port) as client:
            assert client.recv(1) == b""  # closed by the server after --http-idle-seconds
        with connect(s.server.http_port) as client:  # and after an answer, kept alive
            client.sendall(MODELS + b"\r\n")
            data = b""
            while chunk := client.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")


# -- connections ------------------------------------------------------------------------------------------


def test_connections_beyond_the_cap_are_closed_at_once_and_grpc_keeps_answering(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running(model_dir, workers=1, http_port=0, http_max_connections=5, http_idle_seconds=60) as s:
        port = s.server.http_port
        idle = [connect(port) for _ in range(5)]
        with connect(port) as refused:
            assert refused.recv(1) == b""
        assert REFUSED in caplog.messages
        assert any(REFUSED.startswith(m) for m in REPEATED[protocol.__name__])  # logged rate-limited
        with TranslatorClient(s.target) as grpc_client:
            assert (
                grpc_client.translate(["El perro come pan."])[0].hypotheses[0].text == "The dog eats bread."
            )
        idle.pop().close()
        wait_until(lambda: models_status(port) == 200)  # once the server has seen it close
        for client in idle:
            client.close()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert soft == hard  # raised at start-up: the cap, not the descriptors left, refuses connections


def test_the_metrics_port_spends_no_thread_on_idle_connections(model_dir: Path) -> None:
    with running(model_dir, workers=1, metrics_port=0) as s:
        port = s.server.metrics_port
        threads = threading.active_count()
        idle = [connect(port) for _ in range(50)]
        assert scrape(port, "rnnmt_queue_sentences") == 0  # answered after the 50 were accepted
        assert threading.active_count() <= threads
        for client in idle:
            client.close()


# -- the log ----------------------------------------------------------------------------------------------


def test_a_message_a_client_can_repeat_is_logged_once_a_period_with_the_count_left_out() -> None:
    now = 0.0
    repeats = RepeatFilter(["socket.accept() out of system resource"], 60.0, lambda: now)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, None)

    emfile = "socket.accept() out of system resource\nexception: [Errno 24] Too many open files"
    assert [repeats.filter(record(emfile)) for _ in range(1000)] == [True] + [False] * 999
    assert repeats.filter(record("an error of another kind"))
    now = 60.0
    last = record(emfile)
    assert repeats.filter(last)
    assert last.fields == {"suppressed": 999}  # type: ignore[attr-defined]


def test_rnnmt_serve_s_log_rate_limits_what_clients_can_repeat() -> None:
    code = (
        "import logging\n"
        "from rnnmt.serving.server.metrics import REPEATED, log_json_to_stderr\n"
        "log_json_to_stderr()\n"
        "for name, messages in REPEATED.items():\n"
        "    for _ in range(100):\n"
        "        logging.getLogger(name).error(messages[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        (name, messages[0]) for name, messages in REPEATED.items()
    ]
