"""Load test of `rnnmt serve` over loopback, against the engine it wraps.

    .venv/bin/python benchmarks/server_load.py --model PACKAGE_OR_REPOSITORY --source data/bible/test.es --limit 500

Measures, on the same sentences with the model's default decoding options:

- the engine alone: offline batch throughput (all sentences in one call, length-sorted batches) and its
  latency for one sentence at a time;
- the server, as a separate process, with dynamic batching on and off: throughput and p50/p90/p99
  latency for 1, 8 and 64 concurrent clients, each sending one sentence per request and the next as soon
  as the answer arrives (``--limit`` requests per row), and the server's peak RSS.

It prints a table and the two target ratios, against the engine at its best (the faster of onnxruntime's
default threads and one thread): at 64 clients with batching, at least 70% of the engine's
offline batch throughput; the p50 latency of one client within 1.5× the engine's time for one sentence.
The clients are asyncio coroutines on one thread (grpc.aio), so the load generator stays light.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from local_server import ServerProcess

from rnnmt.serving.core.package import find_packages
from rnnmt.serving.core.translator import Translator
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

CLIENTS = (1, 8, 64)
SINGLE_SAMPLE = 50  # sentences timed one by one on the engine


@dataclass(frozen=True)
class Row:
    """One measured configuration: sentences per second and latencies in milliseconds."""

    label: str
    clients: int
    throughput: float
    p50: float
    p90: float
    p99: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure_engine(
    package: Path, sentences: list[str], threads: int, max_output_tokens: int
) -> tuple[float, float]:
    """(offline batch sentences/s, median ms for one sentence) of the engine with ``threads`` intra-op threads."""
    engine = Translator.from_package(package, threads)
    options = engine.default_options
    if max_output_tokens:
        options = replace(options, max_output_tokens=max_output_tokens)
    engine.translate(sentences[:8], options)  # warm-up
    start = time.perf_counter()
    engine.translate(sentences, options)
    throughput = len(sentences) / (time.perf_counter() - start)
    single = []
    for sentence in sentences[:SINGLE_SAMPLE]:
        start = time.perf_counter()
        engine.translate([sentence], options)
        single.append((time.perf_counter() - start) * 1000)
    return throughput, statistics.median(single)


async def load(
    address: str, sentences: list[str], clients: int, options: pb.DecodingOptions
) -> tuple[float, list[float]]:
    """Send every sentence as its own request from ``clients`` concurrent clients: (seconds, latencies ms)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        for sentence in sentences[:4]:  # warm-up
            await stub.Translate(pb.TranslateRequest(texts=[sentence], options=options), timeout=60)
        queue = iter(sentences)
        latencies: list[float] = []

        async def client() -> None:
            for sentence in queue:
                start = time.perf_counter()
                await stub.Translate(pb.TranslateRequest(texts=[sentence], options=options), timeout=60)
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - start, latencies


def measure_server(
    model_dir: Path, sentences: list[str], batching: str, extra: list[str], max_output_tokens: int
) -> tuple[list[Row], float]:
    server = ServerProcess(model_dir, ["--batching", batching, *extra])
    options = pb.DecodingOptions(max_output_tokens=max_output_tokens)
    try:
        rows = []
        for clients in CLIENTS:
            seconds, latencies = asyncio.run(load(server.address, sentences, clients, options))
            rows.append(
                Row(
                    f"server, batching {batching}",
                    clients,
                    len(sentences) / seconds,
                    percentile(latencies, 50),
                    percentile(latencies, 90),
                    percentile(latencies, 99),
                )
            )
        return rows, server.peak_rss_mib()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model package or a model repository")
    parser.add_argument("--source", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--limit", type=int, default=500, help="sentences used (and requests per row)")
    parser.add_argument(
        "--max-output-tokens", type=int, default=0, help="cap on output pieces (0 = the model's default)"
    )
    parser.add_argument("--server-args", default="", help="extra `rnnmt serve` flags, e.g. '--workers 2'")
    args = parser.parse_args()

    package = next(iter(find_packages(args.model).values()))
    probe = Translator.from_package(package, 1)
    lines = [line for line in args.source.read_text(encoding="utf-8").splitlines() if line.strip()]
    lengths = [len(ids) - 1 for ids in probe.tokenize(lines)]
    fits = [line for line, n in zip(lines, lengths, strict=True) if n <= probe.manifest.max_input_tokens]
    sentences = fits[: args.limit]
    engine = {
        threads: measure_engine(package, sentences, threads, args.max_output_tokens) for threads in (0, 1)
    }
    offline = max(throughput for throughput, _ in engine.values())  # the engine at its best
    single_ms = min(ms for _, ms in engine.values())
    rows, rss = [], {}
    for batching in ("on", "off"):
        measured, rss[batching] = measure_server(
            args.model, sentences, batching, args.server_args.split(), args.max_output_tokens
        )
        rows += measured

    print(
        f"{len(sentences)} sentences of {args.source} ({len(lines) - len(fits)} over the model's input "
        f"limit skipped), model {package}"
    )
    for threads, (throughput, ms) in engine.items():
        print(
            f"engine, {threads or 'default'} intra-op threads: offline batch {throughput:8.1f} sentences/s, "
            f"one sentence {ms:7.2f} ms (median)"
        )
    print()
    print(
        f"{'':24} {'clients':>7} {'sent/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'vs offline':>10}"
    )
    for r in rows:
        print(
            f"{r.label:24} {r.clients:7d} {r.throughput:8.1f} {r.p50:8.2f} {r.p90:8.2f} {r.p99:8.2f} "
            f"{r.throughput / offline:10.0%}"
        )
    busy = next(r for r in rows if r.label.endswith("on") and r.clients == 64)
    alone = next(r for r in rows if r.label.endswith("on") and r.clients == 1)
    print()
    print(f"64 clients, batching on: {busy.throughput / offline:.0%} of offline throughput (target ≥ 70%)")
    print(f"1 client p50: {alone.p50 / single_ms:.2f}× the engine's time for one sentence (target ≤ 1.5×)")
    print(f"server peak RSS: batching on {rss['on']:.0f} MiB, off {rss['off']:.0f} MiB")


if __name__ == "__main__":
    main()
