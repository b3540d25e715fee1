"""``--max-concurrent-rpcs``: with that many calls held open by their clients, every further call ends
RESOURCE_EXHAUSTED (which `rnnmt batch` and the client retry), a stream over the limit only once its
client has sent all its requests, so no write of a client fails first; health checks are still answered;
once the calls held end, calls succeed again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import ServerThread, running, wait_until

from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

LIMIT = 4
REQUEST = pb.TranslateRequest(texts=["El perro come pan."])
MESSAGE = f"the server has {LIMIT} calls in progress, its limit (--max-concurrent-rpcs); retry later"


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1, max_concurrent_rpcs=LIMIT) as s:
        yield s


def refused(s: ServerThread, method: str) -> float:
    return s.metric("rnnmt_requests_total", method=method, code="RESOURCE_EXHAUSTED")


def held_requests(release: threading.Event) -> Iterator[pb.TranslateRequest]:
    """One request, then nothing until ``release`` is set: the stream stays open meanwhile."""
    yield REQUEST
    release.wait()


async def stream_over_the_limit(s: ServerThread, requests: int) -> grpc.StatusCode:
    """A TranslateStream of a grpc.aio client that writes one request, waits until the server has refused
    it (counted, the call not yet ended), writes ``requests`` more, closes and returns the call's status;
    a write that failed would raise."""
    before = refused(s, "TranslateStream")
    async with grpc.aio.insecure_channel(s.target) as channel:
        call = pb_grpc.TranslatorStub(channel).TranslateStream()
        await call.write(REQUEST)
        await asyncio.to_thread(wait_until, lambda: refused(s, "TranslateStream") == before + 1)
        for _ in range(requests):
            await call.write(REQUEST)
        await call.done_writing()
        return await call.code()


async def streams_over_the_limit(s: ServerThread, count: int, requests: int) -> list[grpc.StatusCode]:
    """``count`` concurrent TranslateStream calls of grpc.aio clients, each writing ``requests``
    requests as fast as it can, closing and reading its responses: their statuses."""

    async def one(stub: pb_grpc.TranslatorStub) -> grpc.StatusCode:
        call = stub.TranslateStream()
        try:
            for _ in range(requests):
                await call.write(REQUEST)
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:  # the status comes after the responses
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return await call.code()

    async with grpc.aio.insecure_channel(s.target) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        return list(await asyncio.gather(*(one(stub) for _ in range(count))))


def test_calls_over_the_limit_are_refused_with_resource_exhausted_until_calls_end(
    server: ServerThread,
) -> None:
    s = server
    release = threading.Event()
    with grpc.insecure_channel(s.target) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        held = [stub.TranslateStream(held_requests(release)) for _ in range(LIMIT)]
        try:
            for call in held:
                assert next(call).translations[0].hypotheses[0].text == "The dog eats bread."
            # LIMIT calls are in progress, held by their clients.
            for attempt in (
                lambda: stub.Translate(REQUEST),
                lambda: stub.GetModelInfo(pb.GetModelInfoRequest()),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    attempt()
                assert (caught.value.code(), caught.value.details()) == (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    MESSAGE,
                )
            assert refused(s, "Translate") == refused(s, "GetModelInfo") == 1
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert asyncio.run(stream_over_the_limit(s, 20)) == grpc.StatusCode.RESOURCE_EXHAUSTED
            codes = asyncio.run(streams_over_the_limit(s, 200, 5))
            assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 200
        finally:
            release.set()
        for call in held:
            assert list(call) == [] and call.code() == grpc.StatusCode.OK
        assert stub.Translate(REQUEST).translations[0].hypotheses[0].text == "The dog eats bread."
        assert asyncio.run(streams_over_the_limit(s, LIMIT, 3)) == [grpc.StatusCode.OK] * LIMIT
