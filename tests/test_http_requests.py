"""Hostile and odd requests to the HTTP door (and the gRPC checks it shares): bodies that are not JSON,
forms in UTF-8, numbers and strings that Python cannot take as they are, what the door answers before
reading a body, which hosts it answers, the page's security headers, bounded model names, requests the
queue cannot take, and language detection on the start of a text."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from servers import Gate, ServerThread, running, wait_until
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from rnnmt.errors import RnnmtError
from rnnmt.serving.client import TranslatorClient
from rnnmt.serving.http.api import allowed_hosts
from rnnmt.serving.http.calls import Door
from rnnmt.serving.server.api_keys import KeyRing
from rnnmt.serving.server.call import Observed
from rnnmt.serving.server.config import ServerConfig
from rnnmt.serving.server.detect import DETECT_CHARS
from rnnmt.serving.server.metrics import REQUEST_LOGGER, Metrics

REPO = Path(__file__).resolve().parents[1]
TRANSLATE = {"q": "El niño ve pan.", "source": "es", "target": "en"}
JUNK = ["perro gato niño come bebe ve agua pan casa leche " * 2] * 50  # as in test_server


def send(
    port: int,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON or text) of one request, its bytes and headers exactly as given."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": content_type} if data is not None else {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET" if data is None else "POST", path, data, {**sent, **(headers or {})})
        response = connection.getresponse()
        status, got, text = response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()
    try:
        return status, got, json.loads(text)
    except json.JSONDecodeError:
        return status, got, text


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details() or ""


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "rnnmt-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1, http_port=0) as s:
        yield s


@pytest.fixture(scope="module")
def port(server: ServerThread) -> int:
    return server.server.http_port


# -- bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/translate", "/translate"])
def test_only_json_and_form_bodies_are_read(port: int, path: str) -> None:
    """A text/plain post needs no CORS preflight: the door must not read it as JSON."""
    body = {"texts": ["Pan."]} if path == "/v1/translate" else TRANSLATE
    status, _, answer = send(port, path, body, content_type="text/plain")
    assert status == 415
    message = answer["error"] if path == "/translate" else answer["error"]["message"]
    assert "must be JSON (Content-Type: application/json) or a form" in message
    assert send(port, path, body, content_type="application/json; charset=utf-8")[0] == 200
    assert send(port, path, body, content_type="application/vnd.api+json")[0] == 200


def test_form_bodies_are_utf8(port: int) -> None:
    """The error names the source language as read: "español", not "espaÃ±ol" (Latin-1)."""
    form = "application/x-www-form-urlencoded"
    unsupported = (400, {"error": "español is not supported"})
    raw = "q=El niño ve pan.&source=español&target=en".encode()  # as curl -d sends it: not %-escaped
    assert send(port, "/translate", raw, content_type=form)[::2] == unsupported
    escaped = b"q=El+ni%C3%B1o+ve+pan.&source=espa%C3%B1ol&target=en"
    assert send(port, "/translate", escaped, content_type=form)[::2] == unsupported
    data, kind = multipart({**TRANSLATE, "source": "español"})
    assert send(port, "/translate", data, content_type=kind)[::2] == unsupported
    data, kind = multipart(TRANSLATE)
    assert send(port, "/translate", data, content_type=kind)[2] == {"translatedText": "The boy sees bread."}
    for junk in (b"q=ni\xf1o", b"q=ni%F1o"):  # Latin-1, not UTF-8
        status, _, answer = send(port, "/translate", junk, content_type=form)
        assert status == 400 and "the body is not a valid form" in answer["error"]


DEEP = b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
DIGITS = b'{"texts": ["x"], "options": {"beamSize": ' + b"1" * 5000 + b"}}"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/translate", DEEP, "it nests too deeply"),
        ("/translate", DEEP, "it nests too deeply"),
        ("/v1/translate", DIGITS, "the body has a number of more than"),
        ("/translate", b'{"q": "\\ud800 x", "source": "es", "target": "en"}', "lone surrogate"),
        ("/translate", b'{"q": "x", "source": "\\udfff", "target": "en"}', "lone surrogate"),
        ("/translate", b'{"q": "x", "source": ["es"], "target": "en"}', "source must be a string"),
        (
            "/translate",
            b'{"q": "x", "source": "es", "target": "en", "format": {}}',
            "format must be a string",
        ),
        ("/v1/translate", b'{"texts": ["x"], "timeout": 1e400}', "timeout must be a finite number"),
        ("/v1/translate", b'{"texts": ["x"], "timeout": NaN}', "timeout must be a finite number"),
        ("/v1/translate", b'{"texts": ["x"], "timeout": 1' + b"0" * 400 + b"}", "timeout must be"),
        ("/v1/translate", b'{"texts": ["x"], "timeout": true}', "timeout must be"),
    ],
)
def test_bodies_python_cannot_take_as_they_are_are_bad_requests(
    port: int, path: str, body: bytes, message: str
) -> None:
    status, headers, answer = send(port, path, body)
    assert status == 400 and headers["content-type"] == "application/json"
    assert message in (answer["error"] if path == "/translate" else answer["error"]["message"])


def test_an_escaped_surrogate_pair_is_a_character(port: int) -> None:
    body = b'{"q": "El ni\\u00f1o ve pan. \\ud83d\\ude00", "source": "es", "target": "en"}'
    assert send(port, "/translate", body)[0] == 200


@pytest.mark.parametrize("value", [-1, "-1", 16, "16", True, 2.5, "two", 1e400, -1e400, 5e9, 1e20, [1]])
def test_alternatives_are_checked_at_the_edge(port: int, value: Any) -> None:
    body = json.dumps({**TRANSLATE, "alternatives": value}).encode().replace(b"Infinity", b"1e400")
    status, _, answer = send(port, "/translate", body)
    assert (status, answer) == (
        400,
        {"error": "Invalid request: alternatives must be a whole number from 0 to 15"},
    )


@pytest.mark.parametrize(("value", "count"), [(4, 4), ("2", 2), (3.0, 3), ("", 0), (0, 0)])
def test_alternatives_up_to_the_models_beam(port: int, value: Any, count: int) -> None:
    """The toy model's beam is 5: up to 4 alternatives, fewer where some are the same text."""
    status, _, answer = send(port, "/translate", {**TRANSLATE, "alternatives": value})
    assert status == 200
    assert 1 <= len(answer["alternatives"]) <= count if count else "alternatives" not in answer


@pytest.mark.parametrize("value", [5, 15])
def test_alternatives_beyond_the_models_beam_are_refused(port: int, value: int) -> None:
    """A wider beam would change the translation itself: refused rather than done silently."""
    assert send(port, "/translate", {**TRANSLATE, "alternatives": value})[::2] == (
        400,
        {"error": "Invalid request: alternatives must be at most 4 with this model"},
    )


def run_asgi(app: Starlette, path: str) -> tuple[int, Any]:
    """(status, JSON body) of a GET of ``path`` handed to ``app`` as uvicorn would."""

    async def call() -> tuple[int, Any]:
        sent: list[Message] = []
        gone = asyncio.Event()
        requests = iter([{"type": "http.request", "body": b"", "more_body": False}])

        async def receive() -> Message:
            message = next(requests, None)
            if message is None:
                await gone.wait()  # never: the client stays
            return message or {"type": "http.disconnect"}

        async def send_message(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"localhost")],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send_message)
        return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    return asyncio.run(call())


def test_unexpected_errors_are_json_and_logged_with_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    door = Door(KeyRing(), 1024, lambda: None, metrics)

    async def broken() -> Response:
        raise RuntimeError("a bug")

    async def in_a_call(request: Request, _seen: Observed) -> Response:
        return await door.run(request, broken())

    async def before_a_call(_request: Request, _seen: Observed) -> Response:
        raise KeyError("another bug")

    app = Starlette(
        routes=[
            Route("/in-a-call", door.endpoint("HTTP /in-a-call", in_a_call)),
            Route("/before-a-call", door.endpoint("HTTP /before-a-call", before_a_call)),
        ]
    )
    caplog.set_level(logging.ERROR, logger="rnnmt.serving.server.call")
    for path, bug in (("/in-a-call", "RuntimeError: a bug"), ("/before-a-call", "KeyError: 'another bug'")):
        caplog.clear()
        assert run_asgi(app, path) == (
            500,
            {"error": {"code": 500, "status": "INTERNAL", "message": "internal error: the server logged it"}},
        )
        [record] = caplog.records
        assert record.getMessage() == "request failed" and record.exc_info is not None
        fields = record.fields  # type: ignore[attr-defined]
        assert bug in caplog.text and fields == {"method": f"HTTP {path}", "peer": "127.0.0.1:1234"}
        labels = {"method": f"HTTP {path}", "code": "INTERNAL"}
        assert metrics.registry.get_sample_value("rnnmt_requests_total", labels) == 1
        assert bug in caplog.text and fields == {"method": f"HTTP {path}", "peer": "127.0.0.1:1234"}


# -- hosts and headers --------------------------------------------------------------------------------


def test_only_requests_for_this_server_s_names_are_answered(port: int, model_dir: Path) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 must not be answered."""
    assert send(port, "/v1/models", headers={"Host": "evil.example"})[0] == 400
    assert send(port, "/v1/models", headers={"Host": f"evil.example:{port}"})[0] == 400
    for host in (f"localhost:{port}", "127.0.0.1", f"[::1]:{port}", "LOCALHOST"):
        assert send(port, "/v1/models", headers={"Host": host})[0] == 200, host
    with running(model_dir, workers=1, http_port=0, http_allowed_hosts="mt.example, *.mt.example") as s:
        listed = s.server.http_port
        assert send(listed, "/v1/models", headers={"Host": "mt.example"})[0] == 200
        assert send(listed, "/v1/models", headers={"Host": "eu.mt.example:443"})[0] == 200
        assert send(listed, "/v1/models", headers={"Host": "localhost"})[0] == 400


def test_the_hosts_answered_by_default() -> None:
    assert allowed_hosts("127.0.0.1", "") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("127.0.0.2", "") == ["localhost", "127.0.0.1", "[::1]", "127.0.0.2"]
    assert allowed_hosts("::1", "") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("localhost", "") == ["localhost", "127.0.0.1", "[::1]"]
    for bound in ("0.0.0.0", "::", "192.168.1.10", "mt.example"):  # reached by names it cannot know
        assert allowed_hosts(bound, "") == ["*"]
    assert allowed_hosts("0.0.0.0", " a.example,,*.b.example ") == ["a.example", "*.b.example"]
    with pytest.raises(RnnmtError, match="--http-allowed-hosts"):
        ServerConfig(model_dir=Path("."), http_allowed_hosts="a.*.example").validate()


def test_the_page_runs_only_its_own_script_and_style_and_is_never_framed(port: int) -> None:
    status, headers, page = send(port, "/")
    assert status == 200
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["script-src"] == policy["style-src"] == "'self'"  # files of this server, nothing inline
    assert not re.search(r"<script>|<style|\sstyle=|\son[a-z]+=", page)
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and headers["x-frame-options"] == "DENY"
    for path in ("/", "/v1/models", "/openapi.json", "/no-such-page"):
        assert send(port, path)[1]["x-content-type-options"] == "nosniff", path
    assert (
        send(port, "/v1/models", headers={"Host": "evil.example"})[1]["x-content-type-options"] == "nosniff"
    )


# -- model names ------------------------------------------------------------------------------------


def test_model_names_are_bounded_in_answers_and_logs(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    with TranslatorClient(server.target) as client:
        with pytest.raises(grpc.RpcError) as long:
            client.translate(["Pan."], model="m" * 300_000)
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        assert status_of(long.value) == (invalid, "model is 300000 characters long; at most 256")
        with pytest.raises(grpc.RpcError) as version:
            client.translate(["Pan."], model_version="9" * 257)
        assert status_of(version.value) == (invalid, "model_version is 257 characters long; at most 256")
        with pytest.raises(grpc.RpcError) as unknown:
            client.translate(["Pan."], model="u" * 200)
        code, details = status_of(unknown.value)
        assert code == grpc.StatusCode.NOT_FOUND
        assert details.startswith(f"model '{'u' * 64}…' is not served here")
    logged = [r.fields["model"] for r in caplog.records if r.name == REQUEST_LOGGER]  # type: ignore[attr-defined]
    assert logged[-3:] == ["m" * 64 + "…", "toy", "u" * 64 + "…"]
    status, _, answer = send(server.server.http_port, "/v1/models?model=" + "m" * 300)
    assert status == 400 and answer["error"]["message"] == "model is 300 characters long; at most 256"


# -- tokens before bodies ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(model_dir: Path) -> Iterator[int]:
    with running(model_dir, workers=1, http_port=0, auth_token="s3cret", allow_insecure_token=True) as s:
        yield s.server.http_port


def test_without_a_token_first_only_a_small_body_is_read(guarded: int) -> None:
    big_junk = b"{" + b" " * 70_000  # not JSON: parsing it would answer 400
    for path in ("/translate", "/detect"):
        status, _, answer = send(guarded, path, big_junk)
        assert status == 403 and "bodies over 65536 bytes need the token first" in answer["error"], path
        assert send(guarded, path, big_junk, headers={"Authorization": "Bearer wrong"})[0] == 403
    big = {**TRANSLATE, "padding": " " * 70_000, "api_key": "s3cret"}
    assert send(guarded, "/translate", big)[0] == 403
    assert send(guarded, "/translate", big, headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert send(guarded, "/translate?api_key=s3cret", big)[0] == 200
    assert send(guarded, "/translate?api_key=wrong", big)[0] == 403
    assert send(guarded, "/translate", {**TRANSLATE, "api_key": "s3cret"})[0] == 200  # LibreTranslate's way
    assert send(guarded, "/translate", {**TRANSLATE, "api_key": "wrong"})[0] == 403


# -- the queue --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def small_queue(model_dir: Path, gate: Gate) -> Iterator[ServerThread]:
    """As test_server's slow server: one worker stepping only while ``gate`` is open, one sentence per
    batch at beam 16, a queue of 60 sentences."""
    settings = {"max_batch_rows": 16, "max_texts_per_request": 50, "max_queued_sentences": 60}
    with running(model_dir, gate, workers=1, http_port=0, **settings) as s:
        yield s


def test_a_request_larger_than_the_queue_is_invalid_not_busy(small_queue: ServerThread) -> None:
    """Retrying could never help (`rnnmt batch --split-sentences --server` would retry it forever)."""
    with TranslatorClient(small_queue.target) as client:
        for text in ("Pan. " * 61, "Pan.\n" * 61):  # cut into sentences; with lines, counted before
            with pytest.raises(grpc.RpcError) as error:
                client.translate([text], split_sentences=True)
            code, details = status_of(error.value)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "more than the server's queue can ever hold (60)" in details
        assert len(client.translate(["Pan. " * 60], split_sentences=True)) == 1
    status, _, answer = send(small_queue.server.http_port, "/v1/translate", {"texts": ["Pan. " * 61]})
    assert status == 400 and "can ever hold (60)" in answer["error"]["message"]


def test_a_request_the_queue_cannot_take_is_refused_before_it_is_tokenized(
    small_queue: ServerThread, gate: Gate
) -> None:
    """With 11 places left, 20 lines are at least 20 sentences: refused as busy before anyone cuts and
    tokenizes the text (its long line, over the model's length limit, would make it INVALID_ARGUMENT):
    at once when the lines come first, before tokenizing when they come after the long line."""
    s = small_queue

    def received() -> float:
        return s.metric("rnnmt_sentences_received_total", model="toy", version="")

    long = "perro " * 12_000  # over INLINE_TOKENIZE_CHARS: prepared on a thread
    texts = ["Pan.\n" * 19 + long, long + "\nPan." * 19, "Pan.\n" * 19 + long[:2000]]
    before = received()
    with TranslatorClient(s.target) as client, ThreadPoolExecutor(1) as pool:
        with gate.shut():
            ahead = pool.submit(client.translate, JUNK, beam_size=16)  # 1 searched, 49 queued
            wait_until(lambda: received() == before + 50)
            gate.wait_held()
            errors = []
            for text in texts:
                with pytest.raises(grpc.RpcError) as error:
                    client.translate([text], split_sentences=True)
                errors.append(error.value)
        for code, details in map(status_of, errors):
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 60; retry later" in details
        assert len(ahead.result()) == 50
        for text in texts:  # with room, each is tokenized: too long
            with pytest.raises(grpc.RpcError) as idle:
                client.translate([text], split_sentences=True)
            code, details = status_of(idle.value)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "tokens long" in details


# -- language detection -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_sources(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The toy model (from Spanish) and the shipped English→Spanish one: detection chooses es or en."""
    root = tmp_path_factory.mktemp("two_sources")
    (root / "toy").symlink_to(model_dir / "toy")
    (root / "bible-en-es").symlink_to(REPO / "models" / "bible-en-es")
    with running(root, workers=1, http_port=0, default_model="toy") as s:
        yield s.server.http_port


def test_detection_reads_the_start_of_a_text(two_sources: int) -> None:
    spanish = "El perro come pan y el niño bebe agua en la casa. " * (DETECT_CHARS // 50 + 1)
    english = "The dog eats bread and the boy drinks water in the house. " * 400
    assert send(two_sources, "/detect", {"q": english})[2][0]["language"] == "en"
    assert send(two_sources, "/detect", {"q": spanish + english})[2][0]["language"] == "es"
    status, _, answer = send(two_sources, "/translate", {**TRANSLATE, "source": "auto"})
    assert status == 200 and answer["detectedLanguage"]["language"] == "es"
    assert answer["translatedText"] == "The boy sees bread."
