"""A bounded, property-based fuzz of a server process's request surface, with hypothesis.

One `rnnmt serve` process serves the tiny model for the whole module. Each example is a short sequence
of calls: random bytes and mutated encodings sent as the request of every method, requests built from
random field values, known requests (whose answer is fixed before the fuzzing starts) alone or mixed
into streams, each call waited for, given a short deadline, or cancelled after a random delay or after
its first response. Every call must end with an expected status code (never UNKNOWN, INTERNAL or
UNAVAILABLE), known requests must keep their answer, and after each example the process must still run,
answer a known request and report SERVING.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from servers import start_process

from rnnmt.v1 import translator_pb2 as pb

TEXT = "El perro come pan."
TRANSLATION = "The dog eats bread."
KNOWN = pb.TranslateRequest(texts=[TEXT]).SerializeToString()
MAX_TEXTS = 256  # the server's default --max-texts-per-request
PATIENCE = 60.0  # the deadline of a call the fuzzer gives none: a hang fails instead of blocking

TRANSLATE = "/rnnmt.v1.Translator/Translate"
STREAM = "/rnnmt.v1.Translator/TranslateStream"
MODEL_INFO = "/rnnmt.v1.Translator/GetModelInfo"
HEALTH = "/grpc.health.v1.Health/Check"
UNARY = (TRANSLATE, MODEL_INFO, HEALTH)

Code = grpc.StatusCode
ALLOWED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.CANCELLED,
    Code.DEADLINE_EXCEEDED,
    Code.RESOURCE_EXHAUSTED,
}
"""The statuses a call may end with: never a failure (UNKNOWN, INTERNAL) or a server gone (UNAVAILABLE)."""


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[str]
    channel: grpc.Channel
    known: pb.TranslateResponse  # the answer to KNOWN before the fuzzing


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Server]:
    process, address = start_process(
        "--model-dir", str(model_dir), "--workers", "1", "--max-batch-rows", "32"
    )
    channel = grpc.insecure_channel(address)
    try:
        answer = channel.unary_unary(TRANSLATE)(KNOWN, timeout=PATIENCE)
        known = pb.TranslateResponse.FromString(answer)
        assert [t.hypotheses[0].text for t in known.translations] == [TRANSLATION]
        yield Server(process, channel, known)
    finally:
        channel.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- how a call is made and ended ------------------------------------------------------------------------


@dataclass(frozen=True)
class End:
    """How the client ends a call: it waits for the answer (within ``timeout``, PATIENCE if None), and
    cancels it ``cancel_after`` seconds after it started or once the first response came."""

    timeout: float | None = None
    cancel_after: float | None = None
    cancel_on_first: bool = False


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list[bytes]


def call(channel: grpc.Channel, method: str, messages: Sequence[bytes], end: End) -> Outcome:
    """Send ``messages`` (exactly one for a unary method) as they are, and return how the call ended."""
    timeout = PATIENCE if end.timeout is None else end.timeout
    if method == STREAM:
        rendezvous = channel.stream_stream(method)(iter(messages), timeout=timeout)
    else:
        (message,) = messages
        rendezvous = channel.unary_unary(method).future(message, timeout=timeout)
    if end.cancel_after is not None:
        time.sleep(end.cancel_after)  # a fuzzed delay, part of the input
        rendezvous.cancel()
    responses: list[bytes] = []
    with contextlib.suppress(grpc.RpcError, grpc.FutureCancelledError):  # the code says how it ended
        if method == STREAM:
            for response in rendezvous:
                responses.append(response)
                if end.cancel_on_first:
                    rendezvous.cancel()
        else:
            responses.append(rendezvous.result())
    return Outcome(rendezvous.code(), rendezvous.details() or "", responses)


# -- the actions -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Huge:
    """``piece`` repeated to ``chars`` characters: a huge text without a huge repr in hypothesis's reports."""

    piece: str
    chars: int

    @property
    def value(self) -> str:
        return (self.piece * (self.chars // len(self.piece) + 1))[: self.chars]


@dataclass(frozen=True)
class Options:
    beam_size: int
    n_best: int
    max_output_tokens: int
    length_penalty: float | None

    def message(self) -> pb.DecodingOptions:
        options = pb.DecodingOptions(
            beam_size=self.beam_size, n_best=self.n_best, max_output_tokens=self.max_output_tokens
        )
        if self.length_penalty is not None:
            options.length_penalty = self.length_penalty
        return options


@dataclass(frozen=True)
class Raw:
    """Bytes sent as the request(s) of ``method``."""

    method: str
    messages: tuple[bytes, ...]
    end: End

    def run(self, server: Server) -> None:
        check_code(self, call(server.channel, self.method, self.messages, self.end))


@dataclass(frozen=True)
class Fields:
    """A TranslateRequest of fuzzed field values (``texts`` repeated ``copies`` times, then ``huge``), sent
    to Translate, or to TranslateStream after ``known_before`` and before ``known_after`` known requests."""

    texts: tuple[str, ...]
    copies: int
    huge: Huge | None
    model: str
    options: Options | None
    stream: bool
    known_before: int
    known_after: int
    end: End

    def request(self) -> pb.TranslateRequest:
        texts = list(self.texts) * self.copies + ([self.huge.value] if self.huge else [])
        request = pb.TranslateRequest(texts=texts, model=self.model)
        if self.options is not None:
            request.options.CopyFrom(self.options.message())
        return request

    def run(self, server: Server) -> None:
        request = self.request()
        fuzzed = request.SerializeToString()
        if not self.stream:
            outcome = call(server.channel, TRANSLATE, [fuzzed], self.end)
            check_code(self, outcome)
            if outcome.code == Code.OK:
                check_fuzzed(request, outcome.responses[0])
            return
        messages = [KNOWN] * self.known_before + [fuzzed] + [KNOWN] * self.known_after
        outcome = call(server.channel, STREAM, messages, self.end)
        check_code(self, outcome)
        assert len(outcome.responses) <= len(messages), self
        for sent, answer in zip(messages, outcome.responses, strict=False):  # in request order
            if sent is KNOWN:
                check_known(server, answer)
            else:
                check_fuzzed(request, answer)
        if outcome.code == Code.OK:
            assert len(outcome.responses) == len(messages), self


@dataclass(frozen=True)
class Known:
    """Known requests: one on Translate (``count`` 0) or ``count`` on one TranslateStream."""

    count: int
    end: End

    def run(self, server: Server) -> None:
        method, messages = (STREAM, [KNOWN] * self.count) if self.count else (TRANSLATE, [KNOWN])
        outcome = call(server.channel, method, messages, self.end)
        check_code(self, outcome)
        assert outcome.code in (Code.OK, Code.CANCELLED, Code.DEADLINE_EXCEEDED), (self, outcome)
        for answer in outcome.responses:
            check_known(server, answer)
        if outcome.code == Code.OK:
            assert len(outcome.responses) == len(messages), self


@dataclass(frozen=True)
class Named:
    """GetModelInfo or a health check of a fuzzed model or service name."""

    method: str
    name: str
    end: End

    def run(self, server: Server) -> None:
        if self.method == HEALTH:
            message = health_pb2.HealthCheckRequest(service=self.name).SerializeToString()
        else:
            message = pb.GetModelInfoRequest(model=self.name).SerializeToString()
        outcome = call(server.channel, self.method, [message], self.end)
        check_code(self, outcome)
        if outcome.code == Code.OK and self.method == MODEL_INFO:
            info = pb.ModelInfo.FromString(outcome.responses[0])
            assert [m.name for m in info.models] == ["toy"] and info.default_model == "toy", self


Action = Raw | Fields | Known | Named


def check_code(action: Action, outcome: Outcome) -> None:
    assert outcome.code in ALLOWED, f"{action} ended with {outcome.code.name}: {outcome.details}"


def check_known(server: Server, answer: bytes) -> None:
    """``answer`` is the known one: same texts, scores within what batching with others may change."""
    response = pb.TranslateResponse.FromString(answer)
    assert response.model == server.known.model
    got = [[h.text for h in t.hypotheses] for t in response.translations]
    assert got == [[h.text for h in t.hypotheses] for t in server.known.translations]
    scores = [h.score for t in response.translations for h in t.hypotheses]
    expected = [h.score for t in server.known.translations for h in t.hypotheses]
    assert scores == pytest.approx(expected, abs=1e-4)


def check_fuzzed(request: pb.TranslateRequest, answer: bytes) -> None:
    """An answer to a fuzzed request has one translation with at least one hypothesis per text."""
    response = pb.TranslateResponse.FromString(answer)
    assert len(response.translations) == len(request.texts)
    assert all(t.hypotheses for t in response.translations)
    assert response.model == (request.model or "toy")


# -- the strategies ----------------------------------------------------------------------------------------

ends = st.one_of(
    st.just(End()),
    st.builds(End, timeout=st.floats(0.001, 0.5)),
    st.builds(End, cancel_after=st.floats(0.0, 0.05)),
    st.builds(End, timeout=st.floats(0.001, 0.5), cancel_after=st.floats(0.0, 0.05)),
    st.just(End(cancel_on_first=True)),
)
names = st.one_of(st.sampled_from(["", "toy", "Toy", "toy ", "../toy", "nope"]), st.text(max_size=20))
existing = st.sampled_from(["", "toy"])
uint32 = st.one_of(st.just(0), st.integers(1, 20), st.integers(0, 2**32 - 1))
options = st.builds(
    Options,
    beam_size=uint32,
    n_best=uint32,
    max_output_tokens=st.one_of(uint32, st.integers(1000, 1100)),
    length_penalty=st.one_of(
        st.none(),
        st.floats(0.0, 10.0, width=32),
        st.floats(width=32),  # any float32: nan, ±inf, negative, huge, subnormal
    ),
)
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", TEXT, "perro " * 20, " ", "\x00", "\n\t\r", "\u200b", "\ufeff", "\U0001f436"]),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Mn"]), max_size=10),
)
huges = st.builds(  # 5 to 20 MB of UTF-8 at most: over the server's 4 MiB message limit
    Huge,
    piece=st.one_of(st.sampled_from(["perro ", "a", " ", "\U0001f436"]), st.text(min_size=1, max_size=8)),
    chars=st.sampled_from([300, 10_000, 300_000, 5_000_000]),
)
fields = st.builds(
    Fields,
    texts=st.lists(texts, max_size=5).map(tuple),
    copies=st.sampled_from([1, 1, 1, 40, MAX_TEXTS + 1]),
    huge=st.one_of(st.none(), st.none(), huges),
    model=st.one_of(existing, existing, existing, names),  # mostly a model that exists
    options=st.one_of(st.none(), options),
    stream=st.booleans(),
    known_before=st.integers(0, 2),
    known_after=st.integers(0, 2),
    end=ends,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request of some method, truncated, with a byte changed, or with bytes inserted."""
    base = bytearray(
        draw(
            st.sampled_from(
                [
                    KNOWN,
                    pb.TranslateRequest(
                        texts=[TEXT, "Un gato bebe agua."],
                        model="toy",
                        options=pb.DecodingOptions(beam_size=3, n_best=2, length_penalty=0.5),
                    ).SerializeToString(),
                    pb.GetModelInfoRequest(model="toy").SerializeToString(),
                    health_pb2.HealthCheckRequest(service="rnnmt.v1.Translator").SerializeToString(),
                ]
            )
        )
    )
    at = draw(st.integers(0, len(base)))
    how = draw(st.sampled_from(["truncate", "change", "insert"]))
    if how == "truncate":
        return bytes(base[:at])
    if how == "change" and at < len(base):
        base[at] = draw(st.integers(0, 255))
        return bytes(base)
    return bytes(base[:at] + draw(st.binary(min_size=1, max_size=8)) + base[at:])


payloads = st.one_of(st.binary(max_size=64), mutated())
raws = st.one_of(
    st.builds(Raw, method=st.sampled_from(UNARY), messages=st.tuples(payloads), end=ends),
    st.builds(Raw, method=st.just(STREAM), messages=st.lists(payloads, max_size=4).map(tuple), end=ends),
)
knowns = st.builds(Known, count=st.integers(0, 4), end=ends)
nameds = st.builds(Named, method=st.sampled_from([MODEL_INFO, HEALTH]), name=names, end=ends)
actions = st.lists(st.one_of(raws, fields, fields, knowns, nameds), min_size=1, max_size=6)


def request(
    texts: tuple[str, ...] = (TEXT,),
    *,
    copies: int = 1,
    huge: Huge | None = None,
    options: Options | None = None,
    stream: bool = False,
    end: End = End(),
) -> Fields:
    """A Fields action with the defaults of a known request, for the examples run every time."""
    known = 1 if stream else 0
    return Fields(texts, copies, huge, "", options, stream, known, known, end)


def penalty(value: float) -> Options:
    return Options(beam_size=0, n_best=0, max_output_tokens=0, length_penalty=value)


# Cases run every time, whatever hypothesis draws: each edge named above at least once.
MALFORMED: list[Action] = [Raw(method, (b"\x00",), End()) for method in UNARY] + [
    Raw(STREAM, (KNOWN, b"\xff", KNOWN), End()),
    Raw(TRANSLATE, (b"\x0a\x02\xc3\x28",), End()),  # texts[0] is not UTF-8
]
OVERSIZED: list[Action] = [
    request((), huge=Huge("perro ", 5_000_000)),
    request((), huge=Huge("perro ", 5_000_000), stream=True),
    request(("", TEXT), copies=MAX_TEXTS // 2 + 1),
    request(("perro " * 1000,), stream=True),
]
OUT_OF_RANGE: list[Action] = [
    *(request(options=penalty(value), stream=True) for value in (math.nan, math.inf, -math.inf, -1.0, 1e30)),
    request(options=Options(2**32 - 1, 0, 0, None)),
    request(options=Options(4, 5, 0, None)),
    request(options=Options(16, 16, 1024, 10.0)),
    request(options=Options(0, 0, 2**32 - 1, None), stream=True),
]
ENDED_EARLY: list[Action] = [
    Known(count=4, end=End(cancel_on_first=True)),
    Known(count=0, end=End(timeout=0.001)),
    Known(count=3, end=End(cancel_after=0.0)),
    request(("perro " * 40,) * 40, options=Options(16, 16, 0, None), end=End(timeout=0.05)),
    request(("perro " * 40,) * 40, options=Options(16, 16, 0, None), stream=True, end=End(cancel_after=0.01)),
    Known(count=1, end=End()),
]


# -- the test ----------------------------------------------------------------------------------------------


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(actions=actions)
@example(actions=MALFORMED)
@example(actions=OVERSIZED)
@example(actions=OUT_OF_RANGE)
@example(actions=ENDED_EARLY)
def test_fuzzed_requests_get_a_status_and_leave_the_server_serving(
    server: Server, actions: list[Action]
) -> None:
    for action in actions:
        action.run(server)
        assert server.process.poll() is None, f"the server exited with {server.process.returncode}"
    Known(count=0, end=End()).run(server)
    Known(count=2, end=End()).run(server)
    check = server.channel.unary_unary(
        HEALTH,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    for service in ("", "rnnmt.v1.Translator"):
        response = check(health_pb2.HealthCheckRequest(service=service), timeout=PATIENCE)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert server.process.poll() is None, f"the server exited with {server.process.returncode}"
