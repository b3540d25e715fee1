"""The HTTP/1.1 connections of the HTTP doors: uvicorn's httptools protocol with the bounds it lacks.

uvicorn's protocol reads headers of any size and number, waits for a request's headers and body for
ever, and gives a fresh connection that sends nothing all the time it wants. :class:`LimitedProtocol`
bounds each connection, before any authentication:

* **Connections**: beyond ``max_connections`` open at once, a new connection is closed at once.
* **Idle**: a connection that sends nothing for ``idle_seconds``, before its first request or between
  requests, is closed (uvicorn's keep-alive timer, also armed when the connection opens).
* **Headers**: at most :data:`MAX_HEADER_BYTES` of request line and headers and :data:`MAX_HEADERS`
  headers, else ``431`` and the connection is closed. Bytes go to the parser :data:`MAX_HEADER_BYTES`
  at a time and, while a head is incomplete, no further than the limit, so the parser never holds more
  of a head (of one that follows a body in the same piece, up to twice that).
* **Time to send a request**: its headers within ``read_seconds`` of its first byte, then its body within
  ``read_seconds`` of its headers, else ``408`` and the connection is closed. Time while the server
  itself does not read (a request waiting behind another on the connection, or a body the application
  has not consumed yet) is not held against the client.

The server's own answers are JSON like the door's errors (``{"error": {"code": 408, "status":
"DEADLINE_EXCEEDED", "message": ...}}``), sent with ``Connection: close``. The same way
:meth:`LimitedProtocol.end_call` ends a call the server gives up on (its body late, or the end of the
grace period at shutdown): a call whose answer has not started gets the error as its answer, and the
application sees its client gone or, while the body is still coming, is cancelled, quietly (the door
takes a disconnect in the middle of a body for an error).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from rnnmt.serving.server.config import ServerConfig

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers of one request, in bytes: Node.js's default. LibreTranslate's clients, the
page and gRPC-gateway-style JSON clients send well under 1 KiB; only a token or cookies would add to it."""

MAX_HEADERS = 100
"""Headers of one request: a browser sends about 15."""

REFUSED = "HTTP connection refused: the door has its limit of connections open"
"""The warning logged (rate-limited, see :class:`~rnnmt.serving.server.metrics.RepeatFilter`) when the
connection cap closes a new connection."""


@dataclass(frozen=True)
class Limits:
    """What one connection may hold and take (see the module's docstring)."""

    max_connections: int
    idle_seconds: int
    read_seconds: float

    @classmethod
    def of(cls, config: ServerConfig) -> Limits:
        """The limits of the server's doors (``--http-max-connections`` and its kind)."""
        return cls(config.http_max_connections, config.http_idle_seconds, config.http_read_seconds)


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol within :class:`Limits`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        limits: Limits,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.head_bytes = 0  # bytes handed to the parser outside bodies since the last head ended
        self.in_body = False  # between a request's headers and the end of its body
        self.read_timer: asyncio.TimerHandle | None = None
        self.application = self.app
        self.app = self._call  # what uvicorn runs for each request
        self.call: asyncio.Task[Any] | None = None  # the task of the latest call
        self.ending = False  # the server cancelled that call

    async def _call(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Run the application for one request, on a task that :meth:`end_call` may cancel."""
        self.call, self.ending = asyncio.current_task(), False
        try:
            await self.application(scope, receive, send)
        except asyncio.CancelledError:
            if not self.ending:
                raise

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            logger.warning(REFUSED, extra={"fields": {"limit": self.limits.max_connections}})
            transport.close()
            return
        self._start_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Hand ``data`` to the parser at most :data:`MAX_HEADER_BYTES` at a time and, while a request's
        head is incomplete, only up to that limit for the whole head."""
        start = 0
        while start < len(data) and not self.transport.is_closing():
            head = not self.in_body
            size = MAX_HEADER_BYTES - self.head_bytes if head else MAX_HEADER_BYTES
            if size == 0:
                self._refuse(431, "INVALID_ARGUMENT", f"the request's head is over {MAX_HEADER_BYTES} bytes")
                return
            piece = data[start : start + size]
            start += len(piece)
            if head:
                self.head_bytes += len(piece)
            super().data_received(piece)  # which stops the idle timer
        # Idle again: bytes that began no request, or the end of a body already answered.
        idle = self.read_timer is None and (self.cycle is None or self.cycle.response_complete)
        if idle and not self.transport.is_closing():
            self._start_idle_timer()

    # -- parser callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_read_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.transport.is_closing():
            return
        if len(self.headers) == MAX_HEADERS:
            self._refuse(431, "INVALID_ARGUMENT", f"the request has over {MAX_HEADERS} headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        self.head_bytes, self.in_body = 0, True
        super().on_headers_complete()
        self._start_read_timer()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        self.in_body = False
        self._stop_read_timer()
        super().on_message_complete()

    # -- the server's answers ---------------------------------------------------------------------------

    def end_call(self, status: int, code: str, message: str) -> bool:
        """End this connection; a call in flight whose answer has not started gets this error as its
        answer. Returns whether a call was in flight."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
            return False
        if not cycle.response_started and not self.pipeline:  # no earlier answer still due first
            self._answer(status, code, message)
        cycle.disconnected = True  # the application's reads see the client gone, its writes go nowhere
        cycle.message_event.set()
        if self.in_body and not self.pipeline and self.call is not None:  # it may be reading the body
            self.ending = True
            self.call.cancel()
        self.transport.close()
        return True

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer a request the application has not seen, and close."""
        self._answer(status, code, message)
        self.transport.close()

    def _answer(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": status, "status": code, "message": message}}).encode()
        head = [STATUS_LINE[status]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))

    # -- timers -----------------------------------------------------------------------------------------

    def _start_idle_timer(self) -> None:
        """uvicorn's keep-alive timer: the connection is closed unless it sends within ``idle_seconds``."""
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _start_read_timer(self) -> None:
        self._stop_read_timer()
        if self.transport.is_closing():  # a request pipelined behind one refused
            return
        self.read_timer = self.loop.call_later(self.limits.read_seconds, self._read_timed_out)

    def _stop_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _read_timed_out(self) -> None:
        """The head or the body of a request took ``read_seconds``: 408, unless the wait was the server's."""
        self.read_timer = None
        if self.in_body:  # behind another request on the connection, or its body not consumed yet
            servers_wait = bool(self.pipeline) or self.flow.read_paused
        else:  # an earlier request on the connection is still being answered
            servers_wait = self.cycle is not None and not self.cycle.response_complete
        if servers_wait:
            self._start_read_timer()
            return
        message = (
            f"the request's {'body' if self.in_body else 'head'} took over {self.limits.read_seconds:g} s"
        )
        if self.in_body:
            self.end_call(408, "DEADLINE_EXCEEDED", message)
        else:
            self._refuse(408, "DEADLINE_EXCEEDED", message)
