"""Servers for the tests: in-process on an event loop of their own, or as `rnnmt serve` processes."""

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
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rnnmt.serving.server.app import TranslationServer
from rnnmt.serving.server.config import ServerConfig

T = TypeVar("T")
RNNMT = Path(sys.executable).with_name("rnnmt")


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (an AssertionError after ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServerThread:
    """A :class:`TranslationServer` on an event loop of its own thread; ``started`` resolves to its port."""

    def __init__(self, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = TranslationServer(config)
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
def running(model_dir: Path, **settings: object) -> Iterator[ServerThread]:
    config = ServerConfig(model_dir=model_dir, host="127.0.0.1", port=0, **settings)  # type: ignore[arg-type]
    server = ServerThread(config)
    try:
        server.started.result(timeout=60)
        yield server
    finally:
        server.stop()


def start_process(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `rnnmt serve` and return it with its address once it serves (read from its log)."""
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
        if line.startswith("{") and json.loads(line)["message"] == "serving":
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe flowing
            return process, json.loads(line)["address"]
        assert process.poll() is None, f"the server exited: {line}{process.stderr.read()}"
    process.kill()
    raise AssertionError("the server did not start")


def scrape(port: int, name: str) -> float:
    """A metric of the server whose metrics are on ``port`` (0 until it has a value)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)
