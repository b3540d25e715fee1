"""Servers for the tests: in-process on an event loop of their own, or as `rnnmt serve` processes.

Ports are chosen by the servers (port 0) and read back from them, never guessed beforehand. Work that a
test needs to stay queued or in flight is held by a :class:`Gate`, not made slow.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rnnmt.serving.core.beam_search import Hypothesis
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.server.app import TranslationServer
from rnnmt.serving.server.batcher import Model, Runner, Search, TranslatorRunner
from rnnmt.serving.server.config import ServerConfig

T = TypeVar("T")
RNNMT = Path(sys.executable).with_name("rnnmt")


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (an AssertionError after ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


@contextmanager
def closed_port() -> Iterator[int]:
    """A local port that refuses connections while the block runs (bound, not listening: no one else can
    take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def answer(client: socket.socket) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the answer on ``client``, read until the server closes."""
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


class GatedSearch:
    """A search whose steps wait for its :class:`Gate` to be open."""

    def __init__(self, gate: Gate, search: Search) -> None:
        self.gate, self.search = gate, search

    @property
    def done(self) -> bool:
        return self.search.done

    @property
    def alive(self) -> np.ndarray:
        return self.search.alive

    def step(self) -> None:
        self.gate.pass_through()
        self.search.step()

    def drop(self, sources: Sequence[int]) -> None:
        self.search.drop(sources)

    def results(self) -> list[list[Hypothesis]]:
        return self.search.results()


class Gate(TranslatorRunner):
    """The batcher's runner of a test server: the served models' searches, each step waiting while the
    gate is shut. With the gate shut, work stays queued or in flight for as long as the test says."""

    def __init__(self) -> None:
        self._open = True
        self._cond = threading.Condition()
        self.held = 0  # workers waiting at the gate

    def search(self, model: Model, sources: Sequence[Sequence[int]], options: SearchOptions) -> GatedSearch:
        return GatedSearch(self, super().search(model, sources, options))

    def pass_through(self) -> None:
        with self._cond:
            self.held += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open)
            self.held -= 1

    @contextmanager
    def shut(self) -> Iterator[None]:
        """Hold every search step while the block runs; open again at its end, whatever happens."""
        with self._cond:
            self._open = False
        try:
            yield
        finally:
            with self._cond:
                self._open = True
                self._cond.notify_all()

    def wait_held(self, workers: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``workers`` workers are held at the gate."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.held >= workers, timeout), "no worker reached the gate"


class ServerThread:
    """A :class:`TranslationServer` on an event loop of its own thread; ``started`` resolves to its port."""

    def __init__(self, config: ServerConfig, runner: Runner | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = TranslationServer(config, runner)
        self.started = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop)

    @property
    def port(self) -> int:
        return self.started.result(timeout=60)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def metric(self, name: str, **labels: str) -> float:
        return self.server.metrics.registry.get_sample_value(name, labels) or 0.0

    def stop(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@contextmanager
def running(model_dir: Path, runner: Runner | None = None, **settings: object) -> Iterator[ServerThread]:
    """A server of ``model_dir`` on any free port (``http_port=0``, ``metrics_port=0``: those doors too)."""
    config = ServerConfig(model_dir=model_dir, host="127.0.0.1", port=0, **settings)  # type: ignore[arg-type]
    server = ServerThread(config, runner)
    try:
        server.started.result(timeout=60)
        yield server
    finally:
        server.stop()


@dataclass
class ServerProcess:
    """An `rnnmt serve` process that serves, with the ports it reported (0 for a door that is off)."""

    process: subprocess.Popen[str]
    address: str
    http_port: int
    metrics_port: int


def start_process(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `rnnmt serve` and return it with its address once it serves."""
    started = start_server_process(*args)
    return started.process, started.address


def start_server_process(*args: str) -> ServerProcess:
    """Start `rnnmt serve` on any free port and return it once it serves, with the ports it reported in
    its "serving" log line (pass ``--http-port 0`` or ``--metrics-port 0`` for those doors)."""
    process = subprocess.Popen(
        [str(RNNMT), "serve", "--host", "127.0.0.1", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    end = time.monotonic() + 60
    while time.monotonic() < end:
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        line = process.stderr.readline() if ready else ""
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("message") == "serving":
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe flowing
            http, metrics = (
                int(record[door].rsplit(":", 1)[1]) if record[door] else 0 for door in ("http", "metrics")
            )
            return ServerProcess(process, record["address"], http, metrics)
        assert process.poll() is None, f"the server exited: {line}{process.stderr.read()}"
    process.kill()
    raise AssertionError("the server did not start")


def scrape(port: int, name: str) -> float:
    """A metric of the server whose metrics are on ``port`` (0 until it has a value)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)
