"""The end of the grace period at shutdown: HTTP calls still in flight are answered 503 (JSON, like the
door's other errors) whether their body is still coming or they are being translated, with one log line
for them and no traceback; a call cancelled as the batcher fails its job leaves no error unretrieved."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from servers import RNNMT, Gate, ServerThread, answer, wait_until

from rnnmt.serving.server.batcher import Batcher, TranslatorRunner
from rnnmt.serving.server.call import TranslationCall
from rnnmt.serving.server.config import ServerConfig
from rnnmt.serving.server.metrics import Metrics
from rnnmt.serving.server.model_repository import ModelRepository
from rnnmt.serving.server.service import TranslatorService

BODY = b'{"texts": ["El perro come pan."]}'
SHUTTING_DOWN = {"error": {"code": 503, "status": "UNAVAILABLE", "message": "the server is shutting down"}}


def half_sent(port: int) -> socket.socket:
    """A /v1/translate call whose body is partly sent, once the door waits for the rest (it has asked
    for it: ``100 Continue``)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(
        b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    )
    assert read_until(client, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.sendall(BODY[:10])
    return client


def read_until(client: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = client.recv(1)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    return data


def test_calls_in_flight_at_the_end_of_the_grace_period_are_answered_503(
    model_dir: Path, tmp_path: Path
) -> None:
    """An `rnnmt serve` process with a call whose body never comes: SIGTERM, and once the grace period
    is over the call gets 503; the process logs that in one line, with no traceback."""
    log = tmp_path / "stderr"
    command = [str(RNNMT), "serve", "--model-dir", str(model_dir), "--port", "0", "--http-port", "0"]
    with log.open("w") as stderr:
        process = subprocess.Popen([*command, "--workers", "1", "--grace-seconds", "1"], stderr=stderr)
    try:
        wait_until(lambda: '"serving"' in log.read_text() or process.poll() is not None, timeout=60)
        serving = next(json.loads(line) for line in log.read_text().splitlines() if '"serving"' in line)
        client = half_sent(int(serving["http"].rsplit(":", 1)[1]))
        process.send_signal(signal.SIGTERM)
        status, body = answer(client)
        assert process.wait(60) == 0
    finally:
        process.kill()
    assert (status, body) == (503, SHUTTING_DOWN)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["calls"] for r in records if "answered 503" in r["message"]] == [1]
    assert not [r for r in records if "traceback" in r or "never retrieved" in r["message"]]


def test_a_call_being_translated_at_the_end_of_the_grace_period_is_answered_503(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    config = ServerConfig(model_dir, host="127.0.0.1", port=0, workers=1, http_port=0, grace_seconds=0.5)
    with gate.shut():
        server = ServerThread(config, gate)
        server.started.result(timeout=60)
        client = socket.create_connection(("127.0.0.1", server.server.http_port), timeout=30)
        client.sendall(
            b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
        )
        gate.wait_held()  # being translated, for as long as the gate is shut
        stopping = threading.Thread(target=server.stop)  # its batcher stops once the gate opens
        stopping.start()
        status, body = answer(client)
    stopping.join()
    assert (status, body) == (503, SHUTTING_DOWN)
    assert not [r for r in caplog.records if r.exc_info]


def test_a_call_cancelled_as_the_batcher_closes_leaves_no_error_unretrieved(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The batcher fails a job (it is closing) right after its call was cancelled, before the call has
    seen it: nobody waits for the job's error any more, which asyncio must not report as never retrieved."""
    repository = ModelRepository.load(model_dir)

    async def cancelled_as_it_closes() -> None:
        metrics = Metrics()
        batcher = Batcher(TranslatorRunner(), metrics)  # never started: its jobs stay queued
        service = TranslatorService(metrics, max_texts_per_request=8)
        service.attach(repository, batcher)
        call = asyncio.ensure_future(
            service.translate(service.model("toy"), TranslationCall(["El perro come pan."]))
        )
        while not metrics.registry.get_sample_value("rnnmt_queue_sentences"):
            await asyncio.sleep(0)  # until the call waits for its job
        call.cancel()
        batcher.close()
        with pytest.raises(asyncio.CancelledError):
            await call

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(cancelled_as_it_closes())
        gc.collect()
    assert not [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
