"""What every HTTP endpoint shares: errors as JSON with the HTTP code of their gRPC code, bearer tokens,
bounded JSON or form bodies, and calls that end when their client goes away.

Errors: ``{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "..."}}`` on the ``/v1``
endpoints (the gRPC status and the same message as over gRPC); LibreTranslate's endpoints answer
``{"error": "..."}`` as LibreTranslate does (:mod:`rnnmt.serving.http.libretranslate`). Each endpoint
runs within :func:`~rnnmt.serving.server.call.observe`, as every gRPC call does: an unexpected exception
is INTERNAL, its traceback logged, and every call counted, timed and logged.

Bodies are JSON (``application/json`` or a ``+json`` type) or forms (``application/x-www-form-urlencoded``,
UTF-8 as browsers send it, or ``multipart/form-data``); any other type is refused with 415, so that a
page of another site cannot have a browser post a body that the server reads as JSON without asking the
server first (a ``text/plain`` post needs no CORS preflight). A body that is not valid (malformed, a
number of more digits than Python reads, nested too deep, an escaped lone surrogate, which is no
character) is INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rnnmt.serving.server.api_keys import ApiKey, KeyRing
from rnnmt.serving.server.call import CallError, ClientGone, Observed, observe
from rnnmt.serving.server.metrics import Metrics
from rnnmt.serving.server.service import settle

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

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 1000
ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
"""Where JSON may hold a lone surrogate: a ``\\u`` escape of one (raw UTF-8 cannot encode them)."""
SURROGATE = re.compile("[\ud800-\udfff]")


class HttpError(CallError):
    """A call's end with a gRPC status code (mapped to HTTP by :data:`HTTP_STATUS` unless told) and a
    message, and for a key over its limit the seconds after which to retry (the ``Retry-After``
    header)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, http_status: int | None = None, retry_after: int = 0
    ) -> None:
        super().__init__(code, message, retry_after)
        self.http_status = http_status or HTTP_STATUS[code]
        self.headers = {"Retry-After": str(retry_after)} if retry_after else {}

    @classmethod
    def of(cls, error: CallError) -> HttpError:
        if isinstance(error, HttpError):
            return error
        return cls(error.code, error.message, retry_after=error.retry_after)


def error_response(error: HttpError) -> JSONResponse:
    body = {"error": {"code": error.http_status, "status": error.code.name, "message": error.message}}
    return JSONResponse(body, status_code=error.http_status, headers=error.headers)


def bad(message: str) -> HttpError:
    return HttpError(grpc.StatusCode.INVALID_ARGUMENT, message)


def peer_of(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


def bearer(request: Request) -> str:
    """The token of the request's ``Authorization: Bearer`` header; empty without one."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


class Door:
    """The settings an endpoint needs: keys, body limit, availability, metrics."""

    def __init__(
        self,
        keys: KeyRing,
        max_body_bytes: int,
        unavailable: Callable[[], str | None],
        metrics: Metrics,
    ) -> None:
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.unavailable = unavailable
        self.metrics = metrics

    def check_available(self) -> None:
        """Refuse a call while the server is unavailable (starting, shutting down)."""
        reason = self.unavailable()
        if reason:
            raise HttpError(grpc.StatusCode.UNAVAILABLE, reason)

    def check(self, request: Request, api_key: str = "") -> ApiKey | None:
        """Refuse a call while the server is unavailable, or without an accepted key (an
        ``Authorization: Bearer`` header, or ``api_key`` where LibreTranslate sends it); returns the key
        (None on a server without keys)."""
        self.check_available()
        if not self.keys.enabled:
            return None
        key = self.keys.find(bearer(request) or api_key)
        if key is None:
            raise HttpError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this server needs 'Authorization: Bearer <token>' with a valid token",
            )
        return key

    async def body(self, request: Request, limit: int | None = None, max_files: int = 0) -> dict[str, Any]:
        """A JSON object or a form body (see the module docstring) of at most ``limit`` bytes
        (``max_body_bytes`` unless told), fields given more than once as lists, or ``{}`` for no body
        and no type; anything else is INVALID_ARGUMENT (415 for another content type, 413 when too
        large)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        headers = request.headers
        if not kind and headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
            return {}  # no body at all (its parameters are elsewhere)
        if kind not in (FORM, MULTIPART, "application/json") and not kind.endswith("+json"):
            raise HttpError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the body must be JSON (Content-Type: application/json) or a form ({FORM} or {MULTIPART}), "
                f"not {kind or 'of no type'}",
                http_status=415,
            )
        data = await self.read(request, limit or self.max_body_bytes)
        if kind == FORM:
            return form_fields(data)
        if kind == MULTIPART:
            return await multipart_fields(request, data, max_files)
        return json_object(data)

    async def read(self, request: Request, limit: int) -> bytes:
        """The request's body; 413 (before reading, if it says so) when over ``limit`` bytes."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(int(declared), limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise too_large(size, limit)
        return b"".join(chunks)

    async def run(self, request: Request, call: Awaitable[T]) -> T:
        """Await ``call`` (once the request's body is read), cancelling it if the client goes away first
        (:class:`~rnnmt.serving.server.call.ClientGone`)."""
        work = asyncio.ensure_future(call)
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                raise ClientGone("the client went away")
            return work.result()
        finally:
            await settle({work, gone})

    def endpoint(
        self,
        method: str,
        endpoint: Callable[[Request, Observed], Awaitable[Response]],
        render: Callable[[HttpError], Response] = error_response,
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint called ``method`` in the metrics and the log, run within
        :func:`~rnnmt.serving.server.call.observe` like every gRPC call, whose errors become a response
        by ``render`` (the ``/v1`` JSON error unless told)."""

        async def wrapped(request: Request) -> Response:
            def cancelled() -> grpc.StatusCode:
                return grpc.StatusCode.CANCELLED

            try:
                return await observe(
                    self.metrics, method, peer_of(request), lambda seen: endpoint(request, seen), cancelled
                )
            except CallError as exc:
                return render(HttpError.of(exc))

        return wrapped


def fields(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The fields of a form: a value, or a list of them for a field given more than once."""
    grouped: dict[str, list[Any]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}


def form_fields(data: bytes) -> dict[str, Any]:
    """An ``application/x-www-form-urlencoded`` body: UTF-8, its bytes as they are or %-escaped."""
    try:
        text = data.decode("utf-8")
        return fields(
            urllib.parse.parse_qsl(
                text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
            )
        )
    except ValueError as exc:  # not UTF-8 (UnicodeDecodeError is a ValueError), or too many fields
        raise bad(f"the body is not a valid form: {exc}") from None


async def multipart_fields(request: Request, data: bytes, max_files: int = 0) -> dict[str, Any]:
    """A ``multipart/form-data`` body of text fields (its charset, UTF-8 unless it says) and at most
    ``max_files`` files (Starlette's ``UploadFile``)."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield data

    parser = MultiPartParser(
        request.headers, stream(), max_files=max_files, max_fields=MAX_FORM_FIELDS, max_part_size=len(data)
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise bad(f"the body is not a valid form: {exc.message}") from None
    return fields(form.multi_items())


def json_object(data: bytes) -> dict[str, Any]:
    """A JSON object body (an empty body is ``{}``) whose strings are all text."""
    try:
        value = json.loads(data or b"{}")
    except RecursionError:
        raise bad("the body is not valid JSON: it nests too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"the body is not valid JSON: {exc}") from None
    except ValueError:  # an integer of too many digits for int()
        limit = sys.get_int_max_str_digits()
        raise bad(f"the body has a number of more than {limit} digits") from None
    if not isinstance(value, dict):
        raise bad("the body must be a JSON object")
    if ESCAPED_SURROGATE.search(data) and has_surrogate(value):
        raise bad("a string of the body has a lone surrogate (an escape \\ud800 to \\udfff not in a pair)")
    return value


def has_surrogate(value: Any) -> bool:
    """Whether a string in a parsed JSON value has a lone surrogate (iteratively: JSON nests deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and SURROGATE.search(item):
            return True
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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
