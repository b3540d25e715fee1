"""Hot reload under load: 64 clients translate without pause while new versions are dropped in and the
server reloads (admin service), three times.

    .venv/bin/python benchmarks/reload.py --model models/bible-es-en --source data/bible/test.es

The package is copied into a temporary repository as ``<name>/1``; each round copies it in again as the
next version (made distinct by an evaluation record, so it is a new package), renames it into place and
calls ReloadModels, which loads and warms the new version on the side, swaps it in and unloads the old
one (policy ``latest``). Each client sends one sentence per request, the next as soon as the answer
arrives. Prints the calls that failed (the target is none), p50/p99 latency in steady state and during
the swaps (from the reload call until a second after it returned; the target is a p99 within 2× of
steady state), and the server's RSS with one version loaded, at its peak, and after each old version
was unloaded. Run it alone, under ``../shared/tools/quiet``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from local_server import ServerProcess
from server_load import percentile

from rnnmt.serving.core.package import find_packages, record_evaluation
from rnnmt.v1 import admin_pb2 as admin_pb
from rnnmt.v1 import admin_pb2_grpc as admin_grpc
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

TOKEN = "benchmark-admin-token"


def rss_mib(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def add_version(repository: Path, package: Path, name: str, version: int) -> None:
    staging = Path(shutil.copytree(package, repository / name / f".{version}.tmp"))
    record_evaluation(staging, "benchmark", {"version": version})
    staging.rename(repository / name / str(version))


async def run(args: argparse.Namespace, repository: Path, name: str, package: Path) -> None:
    server = ServerProcess(
        repository, ["--admin-token", TOKEN, "--allow-insecure-token", "--workers", str(args.workers)]
    )
    sentences = [s for s in args.source.read_text(encoding="utf-8").splitlines() if s.strip()]
    calls: list[tuple[float, float, str]] = []  # (start, ms, status)
    stop = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.TranslatorStub(channel)
            admin = admin_grpc.AdminStub(channel)

            async def client(offset: int) -> None:
                i = offset
                while not stop.is_set():
                    start = time.perf_counter()
                    try:
                        await stub.Translate(
                            pb.TranslateRequest(texts=[sentences[i % len(sentences)]]), timeout=60
                        )
                        status = "OK"
                    except grpc.aio.AioRpcError as exc:
                        status = exc.code().name
                    calls.append((start, (time.perf_counter() - start) * 1000, status))
                    i += 7

            clients = [asyncio.ensure_future(client(c * 31)) for c in range(args.clients)]
            await asyncio.sleep(args.settle)
            steady_from = time.perf_counter()
            await asyncio.sleep(args.steady)
            steady_to = time.perf_counter()
            one_version = rss_mib(server)
            windows, after = [], []
            for version in range(2, 2 + args.rounds):
                await asyncio.to_thread(add_version, repository, package, name, version)
                began = time.perf_counter()
                reply = await admin.ReloadModels(
                    admin_pb.ReloadModelsRequest(),
                    metadata=(("authorization", f"Bearer {TOKEN}"),),
                    timeout=600,
                )
                ended = time.perf_counter()
                assert [v.model_version for v in reply.loaded] == [str(version)], reply
                windows.append((began, ended + 1.0))
                await asyncio.sleep(args.pause)
                after.append(rss_mib(server))
            stop.set()
            await asyncio.gather(*clients)
        peak = server.peak_rss_mib()
    finally:
        server.stop()

    failed = [c for c in calls if c[2] != "OK"]
    steady = [ms for start, ms, status in calls if steady_from <= start < steady_to and status == "OK"]
    swapping = [
        ms for start, ms, status in calls if any(a <= start < b for a, b in windows) and status == "OK"
    ]
    seconds = steady_to - steady_from
    print(
        f"{args.clients} clients, {len(calls):,} calls, {args.rounds} reloads ({name}, {args.workers} workers)"
    )
    print(f"failed calls: {len(failed)}" + (f" ({sorted({c[2] for c in failed})})" if failed else ""))
    print(f"{'':<22}{'calls':>8}{'sent/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    print(
        f"{'steady state':<22}{len(steady):>8}{len(steady) / seconds:>9.1f}"
        f"{statistics.median(steady):>9.1f}{percentile(steady, 99):>9.1f}"
    )
    window_seconds = sum(b - a for a, b in windows)
    print(
        f"{'during the swaps':<22}{len(swapping):>8}{len(swapping) / window_seconds:>9.1f}"
        f"{statistics.median(swapping):>9.1f}{percentile(swapping, 99):>9.1f}"
    )
    print(f"p99 during the swaps / steady state: {percentile(swapping, 99) / percentile(steady, 99):.2f}")
    print(f"reload calls took {', '.join(f'{b - 1.0 - a:.2f}' for a, b in windows)} s")
    print(
        f"server RSS: one version {one_version:.0f} MiB, peak {peak:.0f} MiB, "
        f"after each reload {', '.join(f'{m:.0f}' for m in after)} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, required=True, help="a package or a repository (its first model)"
    )
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="server workers (0 = one per core)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of steady state measured")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between reloads")
    args = parser.parse_args()
    name, package = next(iter(find_packages(args.model).items()))
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp)
        shutil.copytree(package, repository / name / "1")
        asyncio.run(run(args, repository, name, package))


if __name__ == "__main__":
    main()
