"""What every HTTP endpoint shares: errors as JSON with the HTTP code of their gRPC code, bearer tokens,
bounded JSON or form bodies, and calls that end when their client goes away.

Errors: ``{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "..."}}`` on the ``/v1``
endpoints (the gRPC status and the same message as over gRPC); LibreTranslate's endpoints answer
``{"error": "..."}`` as LibreTranslate does (:mod:`rnnmt.serving.http.libretranslate`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rnnmt.serving.server.metrics import Metrics
from rnnmt.serving.server.service import settle, status_of

T = TypeVar("T")

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class HttpError(Exception):
    """A call's end with a gRPC status code (mapped to HTTP by :data:`HTTP_STATUS`) and a message."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.http_status = http_status or HTTP_STATUS[code]


def error_response(error: HttpError) -> JSONResponse:
    body = {"error": {"code": error.http_status, "status": error.code.name, "message": error.message}}
    return JSONResponse(body, status_code=error.http_status)


class Door:
    """The settings an endpoint needs: tokens, body limit, availability, metrics."""

    def __init__(
        self,
        tokens: list[str],
        max_body_bytes: int,
        unavailable: Callable[[], str | None],
        metrics: Metrics,
    ) -> None:
        self.tokens = [t.encode() for t in tokens]
        self.max_body_bytes = max_body_bytes
        self.unavailable = unavailable
        self.metrics = metrics

    def check(self, request: Request, api_key: str = "") -> None:
        """Refuse a call while the server is unavailable, or without an accepted token (an
        ``Authorization: Bearer`` header, or ``api_key`` where LibreTranslate sends it)."""
        reason = self.unavailable()
        if reason:
            raise HttpError(grpc.StatusCode.UNAVAILABLE, reason)
        if not self.tokens:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else api_key
        if not any(hmac.compare_digest(given.encode(), token) for token in self.tokens):
            raise HttpError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this server needs 'Authorization: Bearer <token>' with a valid token",
            )

    async def body(self, request: Request) -> dict[str, Any]:
        """A JSON object or a form (``application/x-www-form-urlencoded``, ``multipart/form-data``)
        body, at most ``max_body_bytes``; anything else is INVALID_ARGUMENT (413 when too large)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_large(int(declared), self.max_body_bytes)
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > self.max_body_bytes:
                raise too_large(len(data), self.max_body_bytes)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
            request._body = data  # Starlette parses the form from the body it has read
            form = await request.form()
            return {
                key: form.getlist(key) if len(form.getlist(key)) > 1 else value for key, value in form.items()
            }
        try:
            value = json.loads(data or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, f"the body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, "the body must be a JSON object")
        return value

    async def run(self, request: Request, method: str, call: Awaitable[T]) -> T:
        """Await ``call``, cancelling it if the client goes away first; its errors become
        :class:`HttpError` (their status in the service's table; anything else INTERNAL), and the call
        is counted, timed and logged like a gRPC request."""
        start, code = time.perf_counter(), grpc.StatusCode.OK
        work = asyncio.ensure_future(call)
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                code = grpc.StatusCode.CANCELLED
                raise HttpError(code, "the client went away")
            try:
                return work.result()
            except HttpError as exc:
                code = exc.code
                raise
            except Exception as exc:
                known = status_of(exc)
                code = known or grpc.StatusCode.INTERNAL
                message = str(exc) if known else "internal error: the server logged it"
                raise HttpError(code, message) from exc
        finally:
            await settle({work, gone})
            peer = f"{request.client.host}:{request.client.port}" if request.client else ""
            self.metrics.record(method, code.name, time.perf_counter() - start, peer=peer)


async def disconnected(request: Request) -> None:
    """Return when the client disconnects (the body was read before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def too_large(size: int, limit: int) -> HttpError:
    return HttpError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the body has {size} bytes; this server accepts at most {limit}",
        http_status=413,
    )


def handle_errors(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint whose :class:`HttpError` becomes the ``/v1`` JSON error."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except HttpError as exc:
            return error_response(exc)

    return wrapped
