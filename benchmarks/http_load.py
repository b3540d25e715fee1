"""The HTTP door against gRPC on the same `rnnmt serve` process: throughput and latency at 64 concurrent
single-sentence clients, and a vanished HTTP client that must not hold the batcher.

    .venv/bin/python benchmarks/http_load.py --model models/bible-es-en --source data/bible/test.es --limit 500

Both doors get the same sentences (``splitSentences`` off on HTTP, as gRPC); each client sends one
sentence per request and the next as soon as the answer arrives (aiohttp with keep-alive connections,
and grpc.aio: clients whose HTTP parsing is in C like gRPC's, as they share the server's cores). Prints sentences/s, p50/p99 latency and the CPU time per sentence of the server and of the
clients (all on the same cores) for each, and the ratio (target: HTTP at least 90% of gRPC). Then 32 HTTP clients send a long request each and vanish at once: the server's queue must empty
within seconds (their work is cancelled), measured by a gRPC call's latency right after. Run it alone,
under ``../shared/tools/quiet``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import grpc
from local_server import ServerProcess
from server_load import percentile

from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc


async def grpc_load(address: str, sentences: list[str], clients: int) -> tuple[float, list[float]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        queue, latencies = iter(sentences), []

        async def client() -> None:
            for sentence in queue:
                start = time.perf_counter()
                await stub.Translate(pb.TranslateRequest(texts=[sentence]), timeout=120)
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - start, latencies


async def http_load(base: str, sentences: list[str], clients: int) -> tuple[float, list[float]]:
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as http:
        queue, latencies = iter(sentences), []

        async def client() -> None:
            for sentence in queue:
                start = time.perf_counter()
                body = {"texts": [sentence], "splitSentences": False}
                async with http.post("/v1/translate", json=body) as response:
                    response.raise_for_status()
                    await response.read()
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - start, latencies


async def vanished(base: str, address: str, sentences: list[str]) -> float:
    """32 clients send 64 sentences each and go away; milliseconds of a one-sentence gRPC call after."""
    long_request = {"texts": sentences[:64], "splitSentences": False}
    async with aiohttp.ClientSession(base) as http:
        calls = [asyncio.ensure_future(http.post("/v1/translate", json=long_request)) for _ in range(32)]
        await asyncio.wait(calls, timeout=0.5)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        start = time.perf_counter()
        await stub.Translate(pb.TranslateRequest(texts=[sentences[0]]), timeout=120)
        return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    sentences = [s for s in args.source.read_text(encoding="utf-8").splitlines() if s.strip()][: args.limit]
    server = ServerProcess(args.model, ["--http-port", "0"])
    base = f"http://127.0.0.1:{server.http_port}"
    try:
        asyncio.run(grpc_load(server.address, sentences[:8], 4))  # warm-up
        loads = {
            "gRPC": lambda: grpc_load(server.address, sentences, args.clients),
            "HTTP/JSON": lambda: http_load(base, sentences, args.clients),
        }
        rows, cpu = {}, {}
        for name, load in loads.items():
            server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
            rows[name] = asyncio.run(load())
            cpu[name] = (server.cpu_seconds() - server_cpu, time.process_time() - client_cpu)
        after = asyncio.run(vanished(base, server.address, sentences))
    finally:
        server.stop()
    print(f"{len(sentences)} single-sentence requests, {args.clients} concurrent clients, one server")
    print(
        f"{'door':<12}{'sent/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server CPU ms/sent':>20}{'client CPU ms/sent':>20}"
    )
    for name, (seconds, latencies) in rows.items():
        server_ms, client_ms = (1000 * c / len(latencies) for c in cpu[name])
        print(
            f"{name:<12}{len(latencies) / seconds:>9.1f}{statistics.median(latencies):>9.1f}"
            f"{percentile(latencies, 99):>9.1f}{server_ms:>20.2f}{client_ms:>20.2f}"
        )
    (grpc_s, _), (http_s, _) = rows["gRPC"], rows["HTTP/JSON"]
    print(f"HTTP / gRPC throughput: {grpc_s / http_s:.2f}")
    print(f"one gRPC call right after 32 HTTP clients vanished with 64 sentences each: {after:.0f} ms")


if __name__ == "__main__":
    main()
