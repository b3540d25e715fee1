"""Throughput of a batch job (`rnnmt batch`) against a local server and in-process, beside the engine alone.

    .venv/bin/python benchmarks/batch.py --model PACKAGE_OR_REPOSITORY --source data/bible/test.es --limit 2000

On the first ``--limit`` sentences of ``--source`` that fit the model's input limit, with the model's
default decoding options, it measures sentences/s of:

- the engine alone: ``Translator.translate`` on all the sentences in one call (length-sorted batches over the
  whole file: the ceiling), the faster of onnxruntime's default threads and one thread;
- the batch job in-process (``--model``): one engine thread per request, one request per core;
- the batch job against `rnnmt serve` started as a separate process on a free loopback port with its
  default settings (one worker per core, dynamic batching), at the job's default concurrency.

Both jobs run the code of `rnnmt batch` (``rnnmt.serving.batch.job.run``) with its default chunking,
checkpointing every chunk; each is timed from the start of the job (counting and hashing the input,
checking the model) to its last commit, after its backend is loaded. Every figure is the best of
``--repeats`` runs, so that a busy machine disturbs it less. It prints a table with each one's ratio to
the engine alone, and the server job's ratio to the in-process job.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from local_server import ServerProcess

from rnnmt.serving.batch.backends import Backend, EngineBackend, GrpcBackend
from rnnmt.serving.batch.job import BatchJob, run
from rnnmt.serving.core.options import Decoding
from rnnmt.serving.core.package import find_packages
from rnnmt.serving.core.translator import Translator


def engine_alone(package: Path, sentences: list[str], repeats: int) -> float:
    """Sentences/s of one ``Translator.translate`` call on every sentence, at its best thread setting."""
    best = 0.0
    for threads in (0, 1):
        engine = Translator.from_package(package, threads)
        engine.translate(sentences[:8], engine.default_options)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            engine.translate(sentences, engine.default_options)
            best = max(best, len(sentences) / (time.perf_counter() - start))
    return best


def batch_job(source: Path, out: Path, backend: Backend, concurrency: int, repeats: int) -> float:
    """Sentences/s of a batch job translating ``source`` into ``out`` on ``backend`` (then closed)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        result = run(BatchJob(source, out, concurrency=concurrency, restart=True), backend, io.StringIO())
        best = max(best, result.state.lines / (time.perf_counter() - start))
    backend.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model package or a model repository")
    parser.add_argument("--source", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--limit", type=int, default=2000, help="sentences translated by each run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the best counts")
    args = parser.parse_args()

    name, package = next(iter(find_packages(args.model).items()))
    probe = Translator.from_package(package, 1)
    lines = [line for line in args.source.read_text(encoding="utf-8").splitlines() if line.strip()]
    lengths = [len(ids) - 1 for ids in probe.tokenize(lines)]
    sentences = [line for line, n in zip(lines, lengths, strict=True) if n <= probe.manifest.max_input_tokens]
    sentences = sentences[: args.limit]
    cores = len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "source.txt"
        source.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        engine = engine_alone(package, sentences, args.repeats)
        in_process = batch_job(
            source,
            Path(folder) / "in-process.txt",
            EngineBackend(package, name, Decoding()),
            cores,
            args.repeats,
        )
        server = ServerProcess(args.model)
        try:
            backend = GrpcBackend(server.address, name, Decoding(), timeout=600)
            served = batch_job(source, Path(folder) / "server.txt", backend, 8, args.repeats)
        finally:
            server.stop()
        pairs = zip(
            (Path(folder) / "in-process.txt").read_text(encoding="utf-8").splitlines(),
            (Path(folder) / "server.txt").read_text(encoding="utf-8").splitlines(),
            strict=True,
        )
        differ = sum(a != b for a, b in pairs)
        if differ:  # expected with an int8 decoder: its activation scales are per batch
            print(f"note: {differ} of {len(sentences)} lines differ between the in-process and server jobs")

    print(f"{len(sentences)} sentences of {args.source}, model {package}, {cores} cores, default decoding")
    print()
    print(f"{'run':58} {'sentences/s':>11} {'vs engine':>9}")
    rows = [
        ("engine alone (Translator.translate on the whole file)", engine),
        (f"rnnmt batch --model (in-process, concurrency {cores})", in_process),
        ("rnnmt batch --server (local rnnmt serve, concurrency 8)", served),
    ]
    for label, rate in rows:
        print(f"{label:58} {rate:11.1f} {rate / engine:9.2f}")
    print()
    print(f"server job / in-process job: {served / in_process:.2f}")


if __name__ == "__main__":
    main()
