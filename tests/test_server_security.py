"""What a security review of `rnnmt serve` asked for: loopback by default, no bearer token over plaintext
unless allowed, INVALID_ARGUMENT for malformed messages on every method, TLS files and startup failures
reported for what they are, and nothing but JSON lines on stderr. Real servers on local ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from servers import RNNMT, ServerThread, running, wait_until
from test_server import rpc_error

from rnnmt.cli import build_parser
from rnnmt.errors import RnnmtError
from rnnmt.serving.client import TranslatorClient
from rnnmt.serving.server.config import ServerConfig, config_from_args
from rnnmt.v1 import translator_pb2 as pb

MALFORMED = b"\xff\xff\xff\xff"  # a field number 0 and a truncated varint: no protobuf message
EL_PERRO = pb.TranslateRequest(texts=["El perro come pan."]).SerializeToString()
UN_GATO = pb.TranslateRequest(texts=["Un gato bebe agua."]).SerializeToString()
METHODS = {  # method → (kind, request type)
    "/rnnmt.v1.Translator/Translate": ("unary_unary", "rnnmt.v1.TranslateRequest"),
    "/rnnmt.v1.Translator/GetModelInfo": ("unary_unary", "rnnmt.v1.GetModelInfoRequest"),
    "/rnnmt.v1.Translator/TranslateStream": ("stream_stream", "rnnmt.v1.TranslateRequest"),
    "/grpc.health.v1.Health/Check": ("unary_unary", "grpc.health.v1.HealthCheckRequest"),
    "/grpc.health.v1.Health/Watch": ("unary_stream", "grpc.health.v1.HealthCheckRequest"),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": (
        "stream_stream",
        "grpc.reflection.v1alpha.ServerReflectionRequest",
    ),
}


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1) as s:
        yield s


def call_raw(
    channel: grpc.Channel, method: str, requests: list[bytes], metadata: tuple[tuple[str, str], ...] = ()
) -> list[bytes]:
    """Call ``method`` with request bytes as they are: all of them on a request stream, else the first."""
    kind = METHODS[method][0]
    call = getattr(channel, kind)(method)
    sent = iter(requests) if kind.startswith("stream") else requests[0]
    answer = call(sent, timeout=10, metadata=metadata)
    return list(answer) if kind.endswith("stream") else [answer]


def accepts(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((address, port)) == 0


def start_error(model_dir: Path, **settings: object) -> str:
    """The message of the :class:`RnnmtError` a server with ``settings`` fails to start with."""
    with pytest.raises(RnnmtError) as info, running(model_dir, workers=1, **settings):
        pass
    return str(info.value)


# -- secure defaults ------------------------------------------------------------------------------------


def test_the_defaults_are_loopback_and_no_insecure_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RNNMT_HOST", "RNNMT_METRICS_HOST", "RNNMT_ALLOW_INSECURE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = config_from_args(build_parser().parse_args(["serve", "--model-dir", "m"]))
    assert (config.host, config.metrics_host, config.allow_insecure_token) == (
        "127.0.0.1",
        "127.0.0.1",
        False,
    )
    monkeypatch.setenv("RNNMT_HOST", "0.0.0.0")
    monkeypatch.setenv("RNNMT_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("RNNMT_ALLOW_INSECURE_TOKEN", "yes")
    config = config_from_args(build_parser().parse_args(["serve", "--model-dir", "m"]))
    assert (config.host, config.metrics_host, config.allow_insecure_token) == ("0.0.0.0", "0.0.0.0", True)
    flags = ["serve", "--model-dir", "m", "--allow-insecure-token", "false"]
    assert not config_from_args(build_parser().parse_args(flags)).allow_insecure_token
    monkeypatch.setenv("RNNMT_ALLOW_INSECURE_TOKEN", "maybe")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model-dir", "m"])


def test_grpc_and_metrics_listen_on_loopback_unless_told(model_dir: Path) -> None:
    """127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not answer it; 0.0.0.0 does."""
    server = ServerThread(ServerConfig(model_dir=model_dir, port=0, workers=1, metrics_port=0))
    try:
        for port in (server.port, server.server.metrics_port):
            assert accepts("127.0.0.1", port) and not accepts("127.0.0.2", port)
    finally:
        server.stop()
    everywhere = {"host": "0.0.0.0", "metrics_host": "0.0.0.0", "metrics_port": 0}
    server = ServerThread(ServerConfig(model_dir=model_dir, port=0, workers=1, **everywhere))  # type: ignore[arg-type]
    try:
        assert accepts("127.0.0.2", server.port) and accepts("127.0.0.2", server.server.metrics_port)
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["--auth-token", "RNNMT_AUTH_TOKEN"])
def test_a_token_over_plaintext_is_refused_at_startup(how: str) -> None:
    flags = ["--auth-token", "secret"] if how == "--auth-token" else []
    env = {**os.environ, "RNNMT_AUTH_TOKEN": "secret"} if how == "RNNMT_AUTH_TOKEN" else None
    done = subprocess.run(
        [str(RNNMT), "serve", "--model-dir", "m", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 2
    assert "rnnmt: error: a bearer token over plaintext travels in clear" in done.stderr
    assert "--allow-insecure-token" in done.stderr


def test_allow_insecure_token_serves_with_a_warning_and_checks_the_token_first(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="rnnmt.serving.server.app")
    with running(model_dir, workers=1, auth_token="secret", allow_insecure_token=True) as s:
        (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
        assert warning.getMessage().startswith("INSECURE: bearer tokens are accepted over plaintext")
        token = (("authorization", "Bearer secret"),)
        with grpc.insecure_channel(s.target) as channel:
            method = "/rnnmt.v1.Translator/Translate"
            assert pb.TranslateResponse.FromString(call_raw(channel, method, [EL_PERRO], token)[0]).model
            no_token = rpc_error(lambda: call_raw(channel, method, [MALFORMED]))
            assert no_token.code() == grpc.StatusCode.UNAUTHENTICATED  # nothing parsed for strangers
            malformed = rpc_error(lambda: call_raw(channel, method, [MALFORMED], token))
            assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- malformed messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_a_malformed_message_is_invalid_argument_on_every_method(server: ServerThread, method: str) -> None:
    name = method.rsplit("/", 1)[-1]
    before = server.metric("rnnmt_requests_total", method=name, code="INVALID_ARGUMENT")
    with grpc.insecure_channel(server.target) as channel:
        error = rpc_error(lambda: call_raw(channel, method, [MALFORMED]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == f"the request is not a valid {METHODS[method][1]} message"
        assert server.metric("rnnmt_requests_total", method=name, code="INVALID_ARGUMENT") == before + 1
        check = call_raw(channel, "/grpc.health.v1.Health/Check", [b""])[0]
        assert (
            health_pb2.HealthCheckResponse.FromString(check).status == health_pb2.HealthCheckResponse.SERVING
        )


def test_a_malformed_message_mid_stream_ends_the_stream_after_the_answers_before_it(
    server: ServerThread,
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        call = channel.stream_stream(
            "/rnnmt.v1.Translator/TranslateStream", response_deserializer=pb.TranslateResponse.FromString
        )(iter([EL_PERRO, UN_GATO, MALFORMED, EL_PERRO]), timeout=30)
        answers: list[str] = []
        error = rpc_error(lambda: answers.extend(r.translations[0].hypotheses[0].text for r in call))
    assert answers == ["The dog eats bread.", "A cat drinks water."]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "the request is not a valid rnnmt.v1.TranslateRequest message"


def test_valid_streams_still_work_through_the_wrapped_handlers(server: ServerThread) -> None:
    """Health Watch (a coroutine that writes), reflection (an async generator) and TranslateStream."""
    with grpc.insecure_channel(server.target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        asked = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="rnnmt.v1.Translator"),
        ]
        listed, found = list(reflect(iter(asked), timeout=10))
        assert "rnnmt.v1.Translator" in {s.name for s in listed.list_services_response.service}
        assert found.file_descriptor_response.file_descriptor_proto
    with TranslatorClient(server.target, timeout=10) as client:
        answers = client.translate_stream(iter([["El perro come pan."], ["Un gato bebe agua."]]))
        assert [batch[0].hypotheses[0].text for batch in answers] == [
            "The dog eats bread.",
            "A cat drinks water.",
        ]


# -- startup failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("server.pem", "client.key", "--tls-key {key} does not match the certificate of --tls-cert {cert}"),
        ("server.pem", "server.csr", "--tls-key {key} holds no usable PEM private key"),
        ("server.ext", "server.key", "--tls-cert {cert} holds no PEM certificate"),
    ],
    ids=["mismatch", "no-key", "no-certificate"],
)
def test_tls_files_are_checked_before_binding(
    model_dir: Path, certificates: Path, cert: str, key: str, message: str
) -> None:
    cert_path, key_path = certificates / cert, certificates / key
    error = start_error(model_dir, tls_cert=cert_path, tls_key=key_path)
    assert error.startswith(message.format(cert=cert_path, key=key_path))


def test_a_busy_metrics_port_and_an_unreadable_model_say_which(model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        error = start_error(model_dir, metrics_port=port)
    assert error == f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    package = tmp_path / "toy"
    subprocess.run(["cp", "-r", str(model_dir / "toy"), str(package)], check=True)
    (package / "manifest.json").unlink()
    (package / "manifest.json").symlink_to("/proc/self/mem")  # a file whose reads fail, even for root
    error = start_error(package, metrics_port=0)
    assert error == f"cannot load the models in {package}: [Errno 5] Input/output error"


# -- the log stream ----------------------------------------------------------------------------------------


def test_every_line_on_stderr_is_json_even_grpc_core_logs(model_dir: Path, tmp_path: Path) -> None:
    """gRPC's C core writes to file descriptor 2 itself; traced, it logs every API call from its threads."""
    log = tmp_path / "stderr"
    env = {**os.environ, "GRPC_VERBOSITY": "debug", "GRPC_TRACE": "api"}
    command = [str(RNNMT), "serve", "--model-dir", str(model_dir), "--port", "0", "--workers", "1"]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stderr=stderr, env=env)

    def serving() -> list[str]:  # the complete "serving" lines logged so far
        return [line for line in log.read_text().split("\n")[:-1] if '"message": "serving"' in line]

    try:
        wait_until(lambda: bool(serving()) or process.poll() is not None, timeout=60)
        assert serving(), log.read_text()
        with grpc.insecure_channel(json.loads(serving()[0])["address"]) as channel:
            call_raw(channel, "/rnnmt.v1.Translator/Translate", [EL_PERRO])
            rpc_error(lambda: call_raw(channel, "/rnnmt.v1.Translator/Translate", [MALFORMED]))
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        process.kill()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    core = [r for r in records if r["logger"] == "grpc"]
    assert any(r["level"] == "warning" and "Log level DEBUG" in r["message"] for r in core)
    assert any(r["level"] == "info" and r["message"].startswith("grpc_server_start") for r in core)
    assert all(r["source"] for r in core)
    statuses = [r["status"] for r in records if r["logger"] == "rnnmt.serving.requests"]
    assert statuses == ["OK", "INVALID_ARGUMENT"]
    stopped = next(i for i, r in enumerate(records) if r["message"] == "stopped")
    assert any(r["message"] == "grpc_shutdown(void)" for r in records[stopped:])  # after the server, too
