"""A server process under abuse: streams ended every way a client can end them, many times, and a drain
with streams in flight. The server must stay up, keep answering as before, and exit 0 on SIGTERM."""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import RNNMT, start_process

from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

TEXT = "El perro come pan."
SLOW = pb.DecodingOptions(beam_size=16)
WORK = pb.TranslateRequest(texts=["perro gato niño come bebe ve agua pan casa leche " * 2] * 4, options=SLOW)


def endless(first: list[pb.TranslateRequest] | None = None) -> Iterator[pb.TranslateRequest]:
    """``first``, then slow requests for ever: the client never ends the stream by itself."""
    yield from first or []
    yield from itertools.repeat(WORK)


def stream_call(address: str, end: str) -> grpc.StatusCode:
    """Open a TranslateStream with work in flight, end it the way ``end`` says, and return its status."""
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.TranslatorStub(channel)
    requests: Iterator[pb.TranslateRequest] = endless()
    timeout = 30.0
    if end == "invalid options":
        requests = endless(
            [WORK, WORK, pb.TranslateRequest(texts=[TEXT], options=pb.DecodingOptions(n_best=99))]
        )
    elif end == "unknown model":
        requests = endless([WORK, WORK, pb.TranslateRequest(texts=[TEXT], model="nope")])
    elif end == "deadline":
        timeout = 0.5
    call = stub.TranslateStream(requests, timeout=timeout)
    try:
        for _ in call:  # the first response proves work is in flight
            if end == "cancel":
                call.cancel()
            elif end == "channel closed":
                channel.close()
    except grpc.RpcError as exc:
        return exc.code()
    finally:
        channel.close()
    raise AssertionError("the stream ended without an error")


def client_killed(address: str) -> None:
    """`rnnmt translate` streaming a long input, killed once it has printed a translation."""
    client = subprocess.Popen(
        [str(RNNMT), "translate", "--server", address, "--batch-size", "4", "--beam-size", "16"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    feeder = threading.Thread(target=feed, args=(client,), daemon=True)
    feeder.start()
    assert client.stdout.readline()
    client.kill()
    client.wait()


def feed(client: subprocess.Popen[str]) -> None:
    assert client.stdin is not None
    try:
        for _ in range(10_000):
            client.stdin.write(WORK.texts[0] + "\n")
        client.stdin.close()
    except (BrokenPipeError, ValueError):  # the client was killed
        pass


def answers(address: str) -> tuple[str, list[str]]:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        stub = pb_grpc.TranslatorStub(channel)
        response = stub.Translate(pb.TranslateRequest(texts=[TEXT]), timeout=10)
        streamed = [r.translations[0].hypotheses[0].text for r in stub.TranslateStream(iter([
            pb.TranslateRequest(texts=[TEXT])] * 3), timeout=10)]  # fmt: skip
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
    return status, [response.translations[0].hypotheses[0].text, *streamed]


ENDS: dict[str, tuple[Callable[[str], grpc.StatusCode | None], grpc.StatusCode | None]] = {
    "cancel": (lambda a: stream_call(a, "cancel"), grpc.StatusCode.CANCELLED),
    "channel closed": (lambda a: stream_call(a, "channel closed"), grpc.StatusCode.CANCELLED),
    "invalid options": (lambda a: stream_call(a, "invalid options"), grpc.StatusCode.INVALID_ARGUMENT),
    "unknown model": (lambda a: stream_call(a, "unknown model"), grpc.StatusCode.NOT_FOUND),
    "deadline": (lambda a: stream_call(a, "deadline"), grpc.StatusCode.DEADLINE_EXCEEDED),
    "client killed": (client_killed, None),
}


def test_streams_ended_every_way_leave_the_server_serving(model_dir: Path) -> None:
    process, address = start_process(
        "--model-dir", str(model_dir), "--workers", "1", "--max-batch-rows", "16"
    )
    try:
        before = answers(address)
        assert before[0] == "SERVING" and before[1] == ["The dog eats bread."] * 4
        for round_ in range(5):
            for name, (end, code) in ENDS.items():
                assert end(address) == code, f"{name}, round {round_ + 1}"
                assert process.poll() is None, f"the server died when a stream ended by {name}"
        assert answers(address) == before
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


@pytest.mark.parametrize("grace", ["0", "2"])
def test_sigterm_with_streams_in_flight_exits_zero(model_dir: Path, grace: str) -> None:
    """Streams that never end by themselves: cancelled when the grace period is over, then a clean exit."""
    process, address = start_process(
        *("--model-dir", str(model_dir), "--workers", "1", "--max-batch-rows", "16", "--grace-seconds", grace)
    )
    calls: list[grpc.Future] = []
    channels = [grpc.insecure_channel(address) for _ in range(3)]
    try:
        for channel in channels:
            call = pb_grpc.TranslatorStub(channel).TranslateStream(endless(), timeout=60)
            next(call)  # work in flight
            calls.append(call)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        for call in calls:
            with pytest.raises(grpc.RpcError):
                list(call)
    finally:
        process.kill()
        for channel in channels:
            channel.close()
