"""uvicorn serving an ASGI application (the HTTP door, the Prometheus metrics) on the event loop of the gRPC
server, so the door shares its batcher and no thread is spent per connection.

The socket is bound here (a port in use is an error at start-up, and port 0 picks a free one); uvicorn
serves on it without its own signal handling (`rnnmt serve` handles SIGTERM for every door), each
connection within :class:`~rnnmt.serving.http.protocol.Limits` (connections, idle time, the size of
headers, the time to send a request; a TLS handshake gets ``read_seconds`` too). With a client CA,
every connection must present a certificate it signed (mutual TLS, like gRPC).

Stopping closes the idle connections and lets calls in flight finish for ``grace_seconds``; a call still
in flight then is answered ``503`` (the JSON error of the door), and the log says how many were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from rnnmt.errors import RnnmtError
from rnnmt.serving.http.protocol import LimitedProtocol, Limits

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server with :class:`LimitedProtocol` connections, within ``limits``."""

    def __init__(self, config: uvicorn.Config, limits: Limits) -> None:
        super().__init__(config)
        self.limits = limits

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the process's signals are `rnnmt serve`'s
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve on ``sockets`` as uvicorn does, with the limits, and TLS handshakes bounded by
        ``read_seconds`` (asyncio's default is 60 s)."""
        config, loop = self.config, asyncio.get_running_loop()
        await self.lifespan.startup()

        def connection() -> LimitedProtocol:
            return LimitedProtocol(config, self.server_state, self.lifespan.state, self.limits, loop)

        self.servers = [
            await loop.create_server(
                connection,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self.limits.read_seconds if config.ssl else None,
            )
            for sock in sockets or []
        ]
        self.started = True

    def end_calls(self) -> int:
        """Close every connection; the calls still in flight are answered 503. Returns how many were."""
        connections = [c for c in self.server_state.connections if isinstance(c, LimitedProtocol)]
        return sum(c.end_call(503, "UNAVAILABLE", "the server is shutting down") for c in connections)


class HttpServer:
    """An ASGI application served on ``host:port`` (``name`` says which door in errors and the log)."""

    def __init__(
        self,
        name: str,
        app: ASGIApp,
        host: str,
        port: int,
        grace_seconds: float,
        limits: Limits,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_client_ca: Path | None = None,
    ) -> None:
        self.name = name
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise RnnmtError(f"cannot serve {name} on {host}:{port}: {exc.strerror}") from exc
        self.socket.listen(1024)
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]
        self.grace_seconds = grace_seconds
        config = uvicorn.Config(
            app,
            http=LimitedProtocol,
            ws="none",
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=limits.idle_seconds,
            timeout_graceful_shutdown=None,  # stop() ends the calls left after the grace period
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls_client_ca else ssl.CERT_NONE,
            ssl_ca_certs=str(tls_client_ca) if tls_client_ca else None,
        )
        self.server = _Server(config, limits)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Serve in the background; returns the port once uvicorn has started."""
        self.task = asyncio.ensure_future(self.server.serve(sockets=[self.socket]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RnnmtError(f"the {self.name} server stopped while starting")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        """Stop taking connections, let calls in flight finish (at most ``grace_seconds``), then answer
        those left 503."""
        if self.task is None:
            self.socket.close()
            return
        self.server.should_exit = True
        await asyncio.wait({self.task}, timeout=self.grace_seconds)
        if not self.task.done():
            calls = self.server.end_calls()
            if calls:
                logger.warning(
                    f"{self.name} calls still in flight at the end of the grace period answered 503",
                    extra={"fields": {"calls": calls, "grace_seconds": self.grace_seconds}},
                )
            await asyncio.gather(*self.server.server_state.tasks)  # they end without waiting on clients
            self.server.force_exit = True  # not on clients that do not read their answers either
        await self.task
        self.socket.close()
