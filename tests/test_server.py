"""The gRPC server and its client, against real servers on free local ports serving the tiny model.

Servers run in-process (an event loop on a thread) unless a test needs a process of its own (signals,
startup failures, the command line). Where a test needs requests to queue, one worker takes batches of
one sentence at beam 16 and its searches wait at a :class:`~servers.Gate` the test shuts and opens.
"""

from __future__ import annotations

import http.client as http_client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import run_without_torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from servers import RNNMT, Gate, ServerThread, closed_port, running, start_server_process, wait_until

from rnnmt.cli import build_parser
from rnnmt.serving.client import TranslatorClient
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.translator import Translator
from rnnmt.serving.server.config import ServerConfig, config_from_args
from rnnmt.serving.server.model_repository import ModelRepository
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

TEXTS = ["El perro come pan.", "Un gato bebe agua.", "", "El niño ve pan.", "Un perro bebe leche."]
EXPECTED = ["The dog eats bread.", "A cat drinks water.", "", "The boy sees bread.", "A dog drinks milk."]
SLOW = {"beam_size": 16}  # with max_batch_rows=16: one sentence per batch
JUNK = ["perro gato niño come bebe ve agua pan casa leche " * 2] * 50  # 50 sentences of ~8 ms each


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    """Two workers, dynamic batching, a small text limit."""
    with running(model_dir, workers=2, max_texts_per_request=64, max_queue_delay_ms=2.0) as s:
        yield s


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def slow_server(model_dir: Path, gate: Gate) -> Iterator[ServerThread]:
    """One worker whose searches step only while ``gate`` is open, one sentence per batch at beam 16, a
    queue of 60 sentences."""
    with running(
        model_dir, gate, workers=1, max_batch_rows=16, max_texts_per_request=50, max_queued_sentences=60
    ) as s:
        yield s


@pytest.fixture
def client(server: ServerThread) -> Iterator[TranslatorClient]:
    with TranslatorClient(server.target, timeout=30) as c:
        yield c


def texts_of(translations: list[pb.Translation]) -> list[str]:
    return [t.hypotheses[0].text for t in translations]


def alone(engine: Translator, texts: list[str], options: SearchOptions) -> list[list[tuple[str, float]]]:
    """What the engine gives for ``texts`` on their own, as (text, score) per hypothesis."""
    return [[(h.text, h.score) for h in hyps] for hyps in engine.translate(texts, options)]


def as_pairs(translations: list[pb.Translation]) -> list[list[tuple[str, float]]]:
    return [[(h.text, h.score) for h in t.hypotheses] for t in translations]


def assert_same(expected: list[list[tuple[str, float]]], actual: list[list[tuple[str, float]]]) -> None:
    assert [[t for t, _ in hyps] for hyps in actual] == [[t for t, _ in hyps] for hyps in expected]
    for e, a in zip(expected, actual, strict=True):
        assert [s for _, s in a] == pytest.approx([s for _, s in e], abs=1e-4)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# -- the three methods ---------------------------------------------------------------------------------


def test_translate(client: TranslatorClient, engine: Translator) -> None:
    translations = client.translate(TEXTS)
    assert texts_of(translations) == EXPECTED
    assert_same(alone(engine, TEXTS, engine.default_options), as_pairs(translations))
    assert list(translations[2].hypotheses) == [pb.Hypothesis(text="", score=0.0)]
    n_best = client.translate(["Un gato bebe agua."], beam_size=4, n_best=3)[0].hypotheses
    assert len(n_best) == 3 and n_best[0].score >= n_best[1].score >= n_best[2].score
    assert client.translate([]) == []


def test_translate_stream_answers_in_order(client: TranslatorClient, engine: Translator) -> None:
    batches = [[text] * (i + 1) for i, text in enumerate(TEXTS * 4)]
    answers = list(client.translate_stream(iter(batches), beam_size=3, n_best=2))
    assert [texts_of(a) for a in answers] == [[EXPECTED[i % 5]] * (i + 1) for i in range(len(batches))]
    expected = alone(engine, TEXTS, SearchOptions(beam_size=3, n_best=2))
    assert_same(expected, [as_pairs(a)[0] for a in answers[:5]])


def test_model_info(client: TranslatorClient, engine: Translator) -> None:
    info = client.model_info()
    assert info.default_model == "toy" and [m.name for m in info.models] == ["toy"]
    model = info.models[0]
    assert (model.source_language, model.target_language) == ("es", "en")
    assert len(model.version) == 16 and model.rnnmt_version and model.quantization == ""
    assert model.scores["dev_bleu"] == 100.0
    assert model.defaults.beam_size == engine.default_options.beam_size
    assert model.defaults.HasField("length_penalty")
    assert model.limits.max_input_tokens == engine.manifest.max_input_tokens
    assert model.limits.max_texts_per_request == 64 and model.limits.max_beam_size == 16
    assert client.model_info("toy") == pb.ModelInfo(models=[model], default_model="toy")
    assert rpc_error(lambda: client.model_info("nope")).code() == grpc.StatusCode.NOT_FOUND


def test_a_repository_serves_each_model_by_name(model_dir: Path, tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        shutil.copytree(model_dir / "toy", tmp_path / name)
    (tmp_path / ".cache").mkdir()  # hidden folders are not models
    (tmp_path / "README.txt").write_text("files are not models either\n")
    with running(tmp_path, workers=1, default_model="beta") as s, TranslatorClient(s.target) as c:
        info = c.model_info()
        assert [m.name for m in info.models] == ["alpha", "beta"] and info.default_model == "beta"
        channel = grpc.insecure_channel(s.target)
        stub = pb_grpc.TranslatorStub(channel)
        for name, served in (("", "beta"), ("alpha", "alpha"), ("beta", "beta")):
            response = stub.Translate(pb.TranslateRequest(texts=TEXTS[:1], model=name), timeout=10)
            assert response.model == served and texts_of(list(response.translations)) == EXPECTED[:1]
        channel.close()


def test_health_is_not_serving_until_the_models_are_loaded(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loading, loaded = threading.Event(), threading.Event()
    load = ModelRepository.load

    def held(*args: Any) -> ModelRepository:  # the models load only once the test lets them
        loading.set()
        assert loaded.wait(60)
        return load(*args)

    monkeypatch.setattr(ModelRepository, "load", held)
    s = ServerThread(ServerConfig(model_dir=model_dir, host="127.0.0.1", port=0, workers=1))
    request = health_pb2.HealthCheckRequest(service="rnnmt.v1.Translator")
    try:
        assert loading.wait(60)  # the port is open before the models load
        with grpc.insecure_channel(f"127.0.0.1:{s.server.port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            status = check(request, timeout=10, wait_for_ready=True).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            translate = pb_grpc.TranslatorStub(channel).Translate
            error = rpc_error(lambda: translate(pb.TranslateRequest(texts=["hola"]), timeout=10))
            assert error.code() == grpc.StatusCode.UNAVAILABLE and "loading" in error.details()
            assert not s.started.done()
            loaded.set()
            s.started.result(timeout=60)
            assert check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            assert translate(pb.TranslateRequest(texts=["hola"]), timeout=10).model == "toy"
    finally:
        loaded.set()
        s.stop()


def test_health_and_reflection(server: ServerThread, client: TranslatorClient) -> None:
    assert client.health() == "SERVING"
    assert client.health("rnnmt.v1.Translator") == "SERVING"
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
        assert {
            "rnnmt.v1.Translator",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="rnnmt.v1.Translator")
        (response,) = list(stub.ServerReflectionInfo(iter([request])))
        assert response.file_descriptor_response.file_descriptor_proto


def test_metrics_and_request_log(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with running(model_dir, workers=1, metrics_port=0) as s, TranslatorClient(s.target) as c:
        caplog.set_level("INFO", logger="rnnmt.serving.requests")
        c.translate(TEXTS)
        rpc_error(lambda: c.translate(["x"], beam_size=99))
        url = f"http://127.0.0.1:{s.server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'rnnmt_requests_total{code="OK",method="Translate"} 1.0' in text
    assert 'rnnmt_requests_total{code="INVALID_ARGUMENT",method="Translate"} 1.0' in text
    assert 'rnnmt_sentences_translated_total{model="toy",version=""} 4.0' in text
    assert 'rnnmt_sentences_received_total{model="toy",version=""} 4.0' in text
    for name in ("rnnmt_request_latency_seconds_bucket", "rnnmt_queue_sentences", "rnnmt_batch_rows_count"):
        assert name in text
    assert 'rnnmt_tokens_translated_total{model="toy",side="target",version=""}' in text
    lines = [r.fields for r in caplog.records if r.name == "rnnmt.serving.requests"]  # type: ignore[attr-defined]
    assert lines[0]["method"] == "Translate" and lines[0]["texts"] == 5 and lines[0]["status"] == "OK"
    assert lines[0]["model"] == "toy" and lines[0]["peer"].startswith("ipv4:127.0.0.1")
    assert lines[1]["status"] == "INVALID_ARGUMENT" and isinstance(lines[1]["latency_ms"], float)


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.TranslateRequest(texts=["x"] * 65), "INVALID_ARGUMENT", "texts has 65 entries; at most 64"),
        (
            pb.TranslateRequest(texts=["hola", "perro " * 300]),
            "INVALID_ARGUMENT",
            "texts[1] is 1200 tokens long; this model accepts at most 250",
        ),
        (
            pb.TranslateRequest(texts=["x"], options=pb.DecodingOptions(beam_size=17)),
            "INVALID_ARGUMENT",
            "options.beam_size must be 1 to 16",
        ),
        (
            pb.TranslateRequest(texts=["x"], options=pb.DecodingOptions(beam_size=2, n_best=3)),
            "INVALID_ARGUMENT",
            "options.n_best must be 1 to beam_size (2)",
        ),
        (
            pb.TranslateRequest(texts=["x"], options=pb.DecodingOptions(length_penalty=float("nan"))),
            "INVALID_ARGUMENT",
            "options.length_penalty must be 0 to 10",
        ),
        (
            pb.TranslateRequest(texts=["x"], options=pb.DecodingOptions(max_output_tokens=5000)),
            "INVALID_ARGUMENT",
            "options.max_output_tokens must be 1 to 1024",
        ),
        (pb.TranslateRequest(texts=["x"], model="nope"), "NOT_FOUND", "model 'nope' is not served here"),
    ],
    ids=["too-many-texts", "text-too-long", "beam", "n-best", "length-penalty", "max-output", "model"],
)
def test_invalid_requests_name_the_field(
    server: ServerThread, request_: pb.TranslateRequest, code: str, message: str
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        error = rpc_error(lambda: pb_grpc.TranslatorStub(channel).Translate(request_, timeout=10))
    assert error.code().name == code
    assert message in error.details()


def test_length_penalty_zero_is_not_the_default(client: TranslatorClient, engine: Translator) -> None:
    text = ["El niño ve pan."]
    raw = client.translate(text, beam_size=4, n_best=2, length_penalty=0.0)
    assert_same(alone(engine, text, SearchOptions(beam_size=4, n_best=2, length_penalty=0.0)), as_pairs(raw))
    default = client.translate(text, beam_size=4, n_best=2)
    assert as_pairs(default) != as_pairs(raw)


def test_malformed_and_oversized_messages_leave_the_server_serving(
    server: ServerThread, client: TranslatorClient
) -> None:
    with grpc.insecure_channel(server.target, [("grpc.max_send_message_length", 8 << 20)]) as channel:
        raw = channel.unary_unary("/rnnmt.v1.Translator/Translate")
        malformed = rpc_error(lambda: raw(b"\xff\xff\xff\xff", timeout=10))
        assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert malformed.details() == "the request is not a valid rnnmt.v1.TranslateRequest message"
        big = pb.TranslateRequest(texts=["a" * (5 << 20)]).SerializeToString()
        assert rpc_error(lambda: raw(big, timeout=10)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert texts_of(client.translate(TEXTS[:1])) == EXPECTED[:1]


def received(s: ServerThread) -> float:
    return s.metric("rnnmt_sentences_received_total", model="toy", version="")


def test_a_full_queue_refuses_at_once(slow_server: ServerThread, gate: Gate) -> None:
    s = slow_server
    before = received(s)
    with TranslatorClient(s.target) as c, ThreadPoolExecutor(1) as pool:
        with gate.shut():
            ahead = pool.submit(c.translate, JUNK, **SLOW)  # 50 sentences: 49 wait, 11 places are left
            wait_until(lambda: received(s) == before + 50)
            gate.wait_held()
            error = rpc_error(lambda: c.translate(JUNK, **SLOW))
            assert not ahead.done(), "the refusal waited for the work ahead"
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 60" in error.details()
        assert len(ahead.result()) == 50


def test_a_deadline_that_expires_in_the_queue_drops_the_work(slow_server: ServerThread, gate: Gate) -> None:
    """With the work ahead held at the gate, a request queued behind it outlives its deadline."""
    s = slow_server
    translated = s.metric("rnnmt_sentences_translated_total", model="toy", version="")
    dropped = s.metric("rnnmt_sentences_dropped_total", reason="deadline")
    before = received(s)
    with TranslatorClient(s.target) as c, ThreadPoolExecutor(4) as pool:
        with gate.shut():
            ahead = [pool.submit(c.translate, JUNK[:12], **SLOW) for _ in range(4)]
            wait_until(lambda: received(s) == before + 48)
            error = rpc_error(lambda: c.translate(["El perro come pan."] * 3, timeout=2.0, **SLOW))
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            wait_until(lambda: s.metric("rnnmt_sentences_dropped_total", reason="deadline") == dropped + 3)
        assert all(len(call.result()) == 12 for call in ahead)
    assert s.metric("rnnmt_sentences_translated_total", model="toy", version="") == translated + 48


def test_a_cancelled_stream_frees_its_work(slow_server: ServerThread, gate: Gate) -> None:
    s = slow_server
    dropped = s.metric("rnnmt_sentences_dropped_total", reason="cancelled")
    with grpc.insecure_channel(s.target) as channel, ThreadPoolExecutor(1) as pool:
        stub = pb_grpc.TranslatorStub(channel)
        slow = pb.DecodingOptions(beam_size=16)
        before = received(s)
        release = threading.Event()

        def requests() -> Iterator[pb.TranslateRequest]:
            yield pb.TranslateRequest(texts=["El perro come pan."] * 5, options=slow)
            release.wait(30)

        with gate.shut():
            ahead = pool.submit(stub.Translate, pb.TranslateRequest(texts=JUNK, options=slow), timeout=30)
            wait_until(lambda: received(s) == before + 50)
            call = stub.TranslateStream(requests(), timeout=30)
            wait_until(lambda: received(s) == before + 55)
            call.cancel()
            release.set()
            wait_until(lambda: s.metric("rnnmt_sentences_dropped_total", reason="cancelled") == dropped + 5)
        assert len(ahead.result().translations) == 50
    assert s.metric("rnnmt_requests_total", method="TranslateStream", code="CANCELLED") >= 1


# -- concurrency --------------------------------------------------------------------------------------


def test_concurrent_requests_get_what_they_would_get_alone(
    server: ServerThread, client: TranslatorClient, engine: Translator
) -> None:
    sentences = [t for t in TEXTS if t] + ["Un niño come pan.", "El gato ve el agua.", "perro leche casa"]
    option_sets = [
        {},
        {"beam_size": 1},
        {"beam_size": 3, "n_best": 2},
        {"beam_size": 4, "length_penalty": 0.0},
        {"beam_size": 2, "max_output_tokens": 4},
    ]
    requests = [
        ([sentences[(i + j) % len(sentences)] for j in range(1 + i % 3)], option_sets[i % len(option_sets)])
        for i in range(100)
    ]
    batches = server.metric("rnnmt_batch_rows_count")
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda r: client.translate(r[0], **r[1]), requests))
    defaults = engine.default_options
    for (texts, options), answer in zip(requests, answers, strict=True):
        expected = alone(engine, texts, replace(defaults, **options))
        assert_same(expected, as_pairs(answer))
    sentences_sent = sum(len(texts) for texts, _ in requests)
    assert server.metric("rnnmt_batch_rows_count") - batches < sentences_sent, "nothing was batched"


def test_batching_off_translates_the_same(model_dir: Path, engine: Translator) -> None:
    with running(model_dir, workers=2, batching="off") as s, TranslatorClient(s.target) as c:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: c.translate(TEXTS, beam_size=1 + i % 4), range(8)))
        for i, answer in enumerate(answers):
            assert_same(alone(engine, TEXTS, SearchOptions(beam_size=1 + i % 4)), as_pairs(answer))
        assert s.metric("rnnmt_batch_rows_count") == 8  # one batch per request


# -- the client ---------------------------------------------------------------------------------------


class FlakyTranslator(pb_grpc.TranslatorServicer):
    """Answers GetModelInfo with UNAVAILABLE ``failures`` times, then with an empty ModelInfo."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.ModelInfo:
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        if request.model == "bad":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no retry for this")
        return pb.ModelInfo(default_model="flaky")


def test_the_client_retries_unavailable_with_backoff() -> None:
    servicer = FlakyTranslator(failures=2)
    server = grpc.server(ThreadPoolExecutor(2))
    pb_grpc.add_TranslatorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with TranslatorClient(f"127.0.0.1:{port}", retries=3, backoff=0.05) as c:
            assert c.model_info().default_model == "flaky"
            assert servicer.calls == 3
            assert rpc_error(lambda: c.model_info("bad")).code() == grpc.StatusCode.INVALID_ARGUMENT
            assert servicer.calls == 4
        servicer.calls = 0
        with TranslatorClient(f"127.0.0.1:{port}", retries=1, backoff=0.05) as c:
            assert rpc_error(c.model_info).code() == grpc.StatusCode.UNAVAILABLE
            assert servicer.calls == 2
    finally:
        server.stop(None)


def test_translate_command_reads_stdin(server: ServerThread) -> None:
    done = subprocess.run(
        [str(RNNMT), "translate", "--server", server.target],
        input="El perro come pan.\n\nUn gato bebe agua.\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "The dog eats bread.\n\nA cat drinks water.\n"
    done = subprocess.run(
        [str(RNNMT), "translate", "--server", server.target, "--beam-size", "3", "--n-best", "2", "Hola."],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("0 ||| ") for line in lines)
    done = subprocess.run(
        [str(RNNMT), "translate", "--server", server.target, "--beam-size", "99", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "INVALID_ARGUMENT: options.beam_size must be 1 to 16" in done.stderr


def test_health_command_exits_zero_only_when_serving(server: ServerThread) -> None:
    def health(target: str) -> subprocess.CompletedProcess[str]:
        command = [str(RNNMT), "health", "--server", target, "--timeout", "5"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    serving = health(server.target)
    assert (serving.returncode, serving.stdout) == (0, "SERVING\n"), serving.stderr
    with closed_port() as port:
        down = health(f"127.0.0.1:{port}")
    assert down.returncode == 2 and "UNAVAILABLE" in down.stderr


def test_serving_and_the_client_do_not_import_torch() -> None:
    run_without_torch(
        "import rnnmt.serving.server.app, rnnmt.serving.client, rnnmt.serving.server.batcher\n"
        "from rnnmt.cli import build_parser\n"
        "build_parser().parse_args(['serve', '--model-dir', 'x'])\n"
    )


# -- security -----------------------------------------------------------------------------------------


def test_tls(model_dir: Path, certificates: Path) -> None:
    tls = {"tls_cert": certificates / "server.pem", "tls_key": certificates / "server.key"}
    with running(model_dir / "toy", workers=1, **tls) as s:  # a package folder serves that one model
        with TranslatorClient(f"localhost:{s.port}", ca_file=certificates / "ca.pem", retries=0) as c:
            assert texts_of(c.translate(TEXTS[:1])) == EXPECTED[:1]
        with TranslatorClient(f"localhost:{s.port}", retries=0, timeout=5) as plain:
            assert rpc_error(plain.model_info).code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_and_token(model_dir: Path, certificates: Path, tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("old-token\n\nsecret-token\n")
    settings = {
        "tls_cert": certificates / "server.pem",
        "tls_key": certificates / "server.key",
        "tls_client_ca": certificates / "ca.pem",
        "auth_token_file": tmp_path / "tokens",
    }
    mtls = {"ca_file": certificates / "ca.pem", "retries": 0, "timeout": 5}
    identity = {"cert_file": certificates / "client.pem", "key_file": certificates / "client.key"}
    with running(model_dir, workers=1, **settings) as s:
        target = f"localhost:{s.port}"
        with TranslatorClient(target, **mtls, **identity, token="secret-token") as c:
            assert texts_of(c.translate(TEXTS[:1])) == EXPECTED[:1]
        with TranslatorClient(target, **mtls, **identity, token="old-token") as c:
            assert c.model_info().default_model == "toy"
        with TranslatorClient(target, **mtls, token="secret-token") as no_certificate:
            assert rpc_error(no_certificate.model_info).code() == grpc.StatusCode.UNAVAILABLE
        with TranslatorClient(target, **mtls, **identity) as no_token:
            assert no_token.health() == "SERVING"  # probes need no token
            error = rpc_error(no_token.model_info)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in error.details()
            stream = no_token.translate_stream(iter([["hola"]]))
            assert rpc_error(lambda: list(stream)).code() == grpc.StatusCode.UNAUTHENTICATED
        with TranslatorClient(target, **mtls, **identity, token="wrong") as wrong:
            assert rpc_error(lambda: wrong.translate(["hola"])).code() == grpc.StatusCode.UNAUTHENTICATED
        assert s.metric("rnnmt_requests_total", method="GetModelInfo", code="UNAUTHENTICATED") == 1


# -- the process: startup and shutdown ----------------------------------------------------------------


def serving(client: TranslatorClient) -> bool:
    try:
        return client.health() == "SERVING"
    except grpc.RpcError:
        return False


def test_sigterm_lets_calls_in_flight_finish_on_both_doors(model_dir: Path) -> None:
    """A gRPC stream the client keeps open and an HTTP call whose body has not all arrived are in flight
    for as long as the test says: they still get their answers after SIGTERM, new calls are refused."""
    started = start_server_process("--model-dir", str(model_dir), "--workers", "1", "--http-port", "0")
    process = started.process
    release = threading.Event()

    def requests() -> Iterator[pb.TranslateRequest]:
        yield pb.TranslateRequest(texts=[TEXTS[0]])
        assert release.wait(60)
        yield pb.TranslateRequest(texts=[TEXTS[1]])

    body = json.dumps({"texts": [TEXTS[3]]}).encode()
    head = (
        "POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    try:
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "libtorch" not in maps, "the server loaded torch"
        with (
            TranslatorClient(started.address, retries=0) as c,
            grpc.insecure_channel(started.address) as channel,
            socket.create_connection(("127.0.0.1", started.http_port), timeout=60) as http,
        ):
            stream = pb_grpc.TranslatorStub(channel).TranslateStream(requests(), timeout=60)
            assert texts_of(list(next(stream).translations)) == EXPECTED[:1]
            http.sendall(head.encode())
            reply = http.makefile("rb")
            assert reply.readline().startswith(b"HTTP/1.1 100"), "the call is not reading its body"
            assert reply.readline() == b"\r\n"
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: not serving(c))  # draining: NOT_SERVING, or refused
            refused = rpc_error(lambda: c.translate(["El perro come pan."]))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            release.set()
            assert [texts_of(list(r.translations)) for r in stream] == [EXPECTED[1:2]]
            http.sendall(body)
            response = http_client.HTTPResponse(http)
            response.begin()
            assert response.status == 200
            answer = json.load(response)
            assert [t["hypotheses"][0]["text"] for t in answer["translations"]] == [EXPECTED[3]]
        assert process.wait(30) == 0
    finally:
        release.set()
        process.kill()
        process.wait()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_startup_fails_fast_on_a_bad_package(model_dir: Path, tmp_path: Path, damage: str) -> None:
    models = tmp_path / "models"
    if damage == "truncated":
        models.mkdir()
        copy = models / "toy"
        subprocess.run(["cp", "-r", str(model_dir / "toy"), str(copy)], check=True)
        with (copy / "decoder.onnx").open("r+b") as f:
            f.truncate(100)
    done = subprocess.run(
        [str(RNNMT), "serve", "--model-dir", str(models), "--host", "127.0.0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rnnmt: error: ")
    assert ("model directory not found" if damage == "missing" else "decoder.onnx has 100 bytes") in last


def test_environment_variables_configure_serve() -> None:
    script = (
        "from rnnmt.cli import build_parser\n"
        "from rnnmt.serving.server.config import config_from_args\n"
        "c = config_from_args(build_parser().parse_args(['serve', '--workers', '3']))\n"
        "print(c.model_dir, c.port, c.workers, c.batching, c.max_queue_delay_ms, c.http_port, c.metrics_port)\n"
    )
    env = {
        **os.environ,
        "RNNMT_MODEL_DIR": "/models",
        "RNNMT_PORT": "7000",
        "RNNMT_WORKERS": "9",
        "RNNMT_BATCHING": "off",
        "RNNMT_METRICS_PORT": "0",  # any free port; the HTTP door, unset, is off
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/models", "7000", "3", "off", "2.0", "None", "0"]
    off = config_from_args(build_parser().parse_args(["serve", "--model-dir", "m", "--metrics-port", "off"]))
    assert off.metrics_port is None
