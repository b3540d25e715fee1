"""uvicorn serving the HTTP door on the event loop of the gRPC server, so both share one batcher.

The socket is bound here (a port in use is an error at start-up, and port 0 picks a free one); uvicorn
serves on it without its own signal handling (`rnnmt serve` handles SIGTERM for both doors). Stopping
lets requests in flight finish for ``grace_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from rnnmt.errors import RnnmtError


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the process's signals are `rnnmt serve`'s
        yield


class HttpServer:
    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        grace_seconds: float,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise RnnmtError(f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from exc
        self.socket.listen(1024)
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=math.ceil(grace_seconds),
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            ssl_cert_reqs=ssl.CERT_NONE,
        )
        self.server = _Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Serve in the background; returns the port once uvicorn has started."""
        self.task = asyncio.ensure_future(self.server.serve(sockets=[self.socket]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RnnmtError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        """Stop taking connections, let requests in flight finish (at most ``grace_seconds``)."""
        if self.task is None:
            self.socket.close()
            return
        self.server.should_exit = True
        await asyncio.gather(self.task, return_exceptions=True)
        self.socket.close()
