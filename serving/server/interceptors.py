"""Interceptors that refuse calls before they reach a servicer, each refusal counted and logged.

- :class:`BearerTokenInterceptor`: UNAUTHENTICATED without ``authorization: Bearer <token>`` metadata
  holding an accepted token (compared in constant time).
- :class:`ConcurrencyLimitInterceptor`: RESOURCE_EXHAUSTED over ``--max-concurrent-rpcs`` calls in progress
  (a streaming call once its client has sent all its requests, so that the client sees that status).
- :class:`AvailabilityInterceptor`: UNAVAILABLE while the server is loading its models or shutting down.
- :class:`MalformedRequestInterceptor`: INVALID_ARGUMENT for a request message that does not parse
  (gRPC itself answers UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>").

The health service is never refused, so load balancers and Kubernetes probes work without credentials
and see NOT_SERVING rather than an error, whatever the load; neither is server reflection while the server
starts or drains.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from rnnmt.errors import RnnmtError
from rnnmt.serving.server.api_keys import KeyRing
from rnnmt.serving.server.metrics import Metrics

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
REFUSALS = 1000
"""Calls over ``--max-concurrent-rpcs`` that may be in progress at once, being refused by
:class:`ConcurrencyLimitInterceptor` (a stream until its client has sent its last request; none is
translated); gRPC itself refuses calls beyond them, at once."""
MALFORMED = object()
"""What the request deserializer of :class:`MalformedRequestInterceptor` returns for bytes that do not parse."""


def read_tokens(token: str, token_file: Path | None, flag: str = "--auth-token-file") -> list[str]:
    """The accepted tokens: ``token``, or the non-blank lines of ``token_file`` (given as ``flag``);
    none = no authentication."""
    if token_file is None:
        return [token] if token else []
    try:
        lines = token_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RnnmtError(f"cannot read {flag} {token_file}: {exc.strerror}") from exc
    tokens = [line.strip() for line in lines if line.strip()]
    if not tokens:
        raise RnnmtError(f"{flag} {token_file} holds no token")
    return tokens


def bearer_of(metadata: Iterable[tuple[str, Any]]) -> str:
    """The token of a call's ``authorization: Bearer`` metadata; empty without one."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return ""


def handler_kind(handler: grpc.RpcMethodHandler) -> str:
    """``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream``: the handler's attribute
    holding its behavior."""
    return ("stream" if handler.request_streaming else "unary") + (
        "_stream" if handler.response_streaming else "_unary"
    )


def handler_like(
    handler: grpc.RpcMethodHandler,
    behavior: Behavior,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind and serializers as ``handler`` running ``behavior``."""
    return getattr(grpc, handler_kind(handler) + "_rpc_method_handler")(
        behavior,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def refusal(
    handler: grpc.RpcMethodHandler, method: str, code: grpc.StatusCode, message: str, metrics: Metrics
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that records the call and fails it with ``code``."""
    name = method.rsplit("/", 1)[-1]

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        metrics.record(name, code.name, 0.0, peer=context.peer())
        await context.abort(code, message)

    return handler_like(handler, refuse)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without an accepted bearer token (a key of ``keys``), except health checks and
    methods ``guards`` says are not its to guard (the admin service has tokens of its own)."""

    def __init__(
        self, keys: KeyRing, metrics: Metrics, guards: Callable[[str], bool] = lambda _method: True
    ) -> None:
        self._keys = keys
        self._metrics = metrics
        self._guards = guards

    def accepts(self, metadata: Iterable[tuple[str, Any]]) -> bool:
        return self._keys.find(bearer_of(metadata)) is not None

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX) or not self._guards(details.method):
            return handler
        if self.accepts(details.invocation_metadata or ()):
            return handler
        return refusal(
            handler,
            details.method,
            grpc.StatusCode.UNAUTHENTICATED,
            "this server needs 'authorization: Bearer <token>' metadata with a valid token",
            self._metrics,
        )


def as_coroutine(behavior: Any) -> Behavior:
    """A grpc.aio behavior as a coroutine function: an async-generator one wrapped by :func:`writing`."""
    return writing(behavior) if inspect.isasyncgenfunction(behavior) else behavior


class ConcurrencyLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls with RESOURCE_EXHAUSTED while ``limit`` calls are in progress (health checks are
    neither counted nor refused); each refusal is counted and logged.

    gRPC's own limit (``maximum_concurrent_rpcs``) refuses a call at once, before reading its requests.
    A client still sending requests on a stream then has a write fail as the call ends, and a grpc.aio
    client reports that as INTERNAL "Internal error from Core" (or CANCELLED, writing from a request
    iterator) instead of the status sent. So a request-streaming call over the limit is read to its end
    first (its requests are dropped, none translated), then refused; a unary request is refused at
    once. gRPC's own limit stays as a backstop, with room for :data:`REFUSALS` refusals in progress
    (:attr:`grpc_limit`)."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.in_progress = 0
        self._metrics = metrics

    @property
    def grpc_limit(self) -> int:
        """The ``maximum_concurrent_rpcs`` to give gRPC: the calls in progress and :data:`REFUSALS`."""
        return self.limit + REFUSALS

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        name = details.method.rsplit("/", 1)[-1]
        respond = as_coroutine(getattr(handler, handler_kind(handler)))
        message = (
            f"the server has {self.limit} calls in progress, its limit (--max-concurrent-rpcs); retry later"
        )

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.in_progress >= self.limit:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                self._metrics.record(name, code.name, 0.0, peer=context.peer())
                if handler.request_streaming:
                    async for _ in request:  # to the client's last request: its writes all succeed
                        pass
                await context.abort(code, message)
            self.in_progress += 1
            try:
                return await respond(request, context)
            finally:
                self.in_progress -= 1

        return handler_like(handler, limited)


class AvailabilityInterceptor(grpc.aio.ServerInterceptor):
    """Refuses new calls with UNAVAILABLE whenever ``unavailable()`` returns a reason."""

    def __init__(self, unavailable: Callable[[], str | None], metrics: Metrics) -> None:
        self._unavailable = unavailable
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        reason = self._unavailable()
        if handler is None or reason is None or details.method.startswith((HEALTH_PREFIX, REFLECTION_PREFIX)):
            return handler
        return refusal(handler, details.method, grpc.StatusCode.UNAVAILABLE, reason, self._metrics)


class MalformedRequest(Exception):
    """Raised by a request stream of :class:`MalformedRequestInterceptor` at a message that does not parse."""


class CheckedRequests:
    """A call's request stream that raises :class:`MalformedRequest` at a message that did not parse.

    A plain async iterator, not an async generator, so it never has a frame left to finalize after the
    call; ``aclose`` closes gRPC's stream underneath.
    """

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = aiter(requests)

    def __aiter__(self) -> CheckedRequests:
        return self

    async def __anext__(self) -> Any:
        request = await anext(self._requests)
        if request is MALFORMED:
            raise MalformedRequest
        return request

    async def aclose(self) -> None:
        if isinstance(self._requests, AsyncGenerator):
            await self._requests.aclose()


def writing(behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]) -> Behavior:
    """The async-generator handler ``behavior`` as a coroutine that writes its responses with
    ``context.write`` and closes it before the call ends (gRPC would leave it to the garbage collector,
    which may close it, touching the context, after the call ended)."""

    async def write(request: Any, context: grpc.aio.ServicerContext) -> None:
        async with aclosing(behavior(request, context)) as responses:
            async for response in responses:
                await context.write(response)

    return write


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Answers request bytes that are not a valid message with INVALID_ARGUMENT, on every method.

    Each handler's deserializer returns :data:`MALFORMED` instead of raising. A unary call with that
    request is refused before its behavior runs; a request stream raises :class:`MalformedRequest` at it
    (:class:`CheckedRequests`), which the wrapped behavior turns into the status after the original one
    has ended. Either way the refusal is counted and logged as a request of its own. Behaviors must be
    coroutines or async generators (a grpc.aio server's); a behavior reading with ``context.read()``
    instead of its request iterator would get :data:`MALFORMED` itself.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse: Callable[[bytes], Any] = handler.request_deserializer
        descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        message = f"the request is not a valid {descriptor.full_name if descriptor else 'request'} message"
        name = details.method.rsplit("/", 1)[-1]
        respond = as_coroutine(getattr(handler, handler_kind(handler)))

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError:
                return MALFORMED

        async def refuse(context: grpc.aio.ServicerContext) -> None:
            self._metrics.record(name, grpc.StatusCode.INVALID_ARGUMENT.name, 0.0, peer=context.peer())
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is MALFORMED:
                await refuse(context)
            return await respond(request, context)

        async def stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            async with aclosing(CheckedRequests(requests)) as checked:
                try:
                    return await respond(checked, context)
                except MalformedRequest:
                    await refuse(context)

        return handler_like(handler, stream if handler.request_streaming else unary, deserialize)
