"""One maximal request against small ones: does the server free cancelled work and keep small requests fast?

    .venv/bin/python benchmarks/fairness.py --model models/bible-es-en --source data/bible/test.es

A *maximal* request holds 256 texts of the model's maximum input length, at beam 16 with up to 1,024
output tokens. Against a `rnnmt serve` process (one worker per core), it measures, each beside its
baseline on the idle server in the same run:

1. a one-sentence request sent right after a maximal request was cancelled (after 3 s), and right after
   one failed on its 4 s deadline (target: answered within 1 s);
2. SIGTERM with ``--grace-seconds 10`` while a maximal request is in flight: time until the process has
   exited (target: within the grace period);
3. 64 clients sending one sentence per request for ``--seconds``, alone and while one more client sends
   maximal requests back to back: their p99 latency (target: within 2× of alone).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import grpc
from local_server import ServerProcess
from server_load import percentile

from rnnmt.serving.core.package import find_packages
from rnnmt.serving.core.translator import Translator
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

MAXIMAL = pb.DecodingOptions(beam_size=16, max_output_tokens=1024)


def maximal_text(engine: Translator, sentences: list[str]) -> str:
    """Sentences joined until the text has exactly the model's maximum number of input pieces (or less)."""
    limit = engine.manifest.max_input_tokens
    words: list[str] = []
    for sentence in sentences:
        words += sentence.split()
        if len(engine.tokenize([" ".join(words)])[0]) - 1 >= limit:
            break
    while len(engine.tokenize([" ".join(words)])[0]) - 1 > limit:
        words.pop()
    return " ".join(words)


async def one(stub: pb_grpc.TranslatorStub, sentence: str) -> float:
    """Milliseconds to translate one sentence."""
    start = time.perf_counter()
    await stub.Translate(pb.TranslateRequest(texts=[sentence]), timeout=120)
    return (time.perf_counter() - start) * 1000


async def after_abandoned(address: str, big: pb.TranslateRequest, sentence: str) -> dict[str, float]:
    """Idle latency, then latency right after a cancelled and after an expired maximal request (ms)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        idle = statistics.median([await one(stub, sentence) for _ in range(5)])
        call = stub.Translate(big, timeout=600)
        await asyncio.sleep(3)
        call.cancel()
        cancelled = await one(stub, sentence)
        try:
            await stub.Translate(big, timeout=4)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
        expired = await one(stub, sentence)
    return {"idle": idle, "after a cancel": cancelled, "after a deadline": expired}


def sigterm_seconds(model_dir: Path, big: pb.TranslateRequest, grace: float) -> float:
    """Seconds from SIGTERM to exit, with a maximal request in flight."""
    server = ServerProcess(model_dir, ["--grace-seconds", str(grace)])

    async def send() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = pb_grpc.TranslatorStub(channel).Translate(big, timeout=600)
            await asyncio.sleep(3)
            start = time.perf_counter()
            server.process.terminate()
            await asyncio.to_thread(server.process.wait, 120)
            result.append(time.perf_counter() - start)
            call.cancel()

    result: list[float] = []
    asyncio.run(send())
    return result[0]


async def small_clients(
    address: str, sentences: list[str], seconds: float, big: pb.TranslateRequest | None
) -> list[float]:
    """Latencies (ms) of 64 closed-loop one-sentence clients over ``seconds``, with a maximal client or not."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        end = time.monotonic() + seconds
        latencies: list[float] = []

        async def client(i: int) -> None:
            for sentence in sentences[i::64] * 1000:
                if time.monotonic() >= end:
                    return
                latencies.append(await one(stub, sentence))

        async def heavy() -> None:
            while big is not None and time.monotonic() < end:
                call = stub.Translate(big, timeout=max(0.1, end - time.monotonic()))
                try:
                    await call
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc

        await asyncio.gather(heavy(), *(client(i) for i in range(64)))
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model package or a model repository")
    parser.add_argument("--source", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each 64-client run")
    args = parser.parse_args()

    package = next(iter(find_packages(args.model).values()))
    engine = Translator.from_package(package, 1)
    lines = [line for line in args.source.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [s for s in lines if len(engine.tokenize([s])[0]) - 1 <= engine.manifest.max_input_tokens]
    text = maximal_text(engine, lines)
    big = pb.TranslateRequest(texts=[text] * 256, options=MAXIMAL)
    print(
        f"maximal request: 256 × {len(engine.tokenize([text])[0]) - 1} pieces, beam 16, ≤ 1024 output tokens"
    )

    server = ServerProcess(args.model)
    try:
        abandoned = asyncio.run(after_abandoned(server.address, big, sentences[0]))
        alone = asyncio.run(small_clients(server.address, sentences, args.seconds, None))
        shared = asyncio.run(small_clients(server.address, sentences, args.seconds, big))
    finally:
        server.stop()
    grace = 10.0
    exit_seconds = sigterm_seconds(args.model, big, grace)

    print("\n1. one sentence, ms (target: ≤ 1000 after an abandoned maximal request)")
    for label, ms in abandoned.items():
        print(f"   {label:18} {ms:9.1f}   {ms / abandoned['idle']:6.2f}× idle")
    print(
        f"\n2. SIGTERM with a maximal request in flight, --grace-seconds {grace:g}: exited after {exit_seconds:.2f} s"
    )
    p99_alone, p99_shared = percentile(alone, 99), percentile(shared, 99)
    print("\n3. 64 one-sentence clients (target: p99 with a maximal client ≤ 2× alone)")
    print(f"   {'':22} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for label, values in (("alone", alone), ("with a maximal client", shared)):
        print(f"   {label:22} {len(values):8d} {percentile(values, 50):8.1f} {percentile(values, 99):8.1f}")
    print(f"   p99 ratio: {p99_shared / p99_alone:.2f}×")


if __name__ == "__main__":
    main()
