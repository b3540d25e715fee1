"""Interceptors that refuse calls before they reach a servicer, each refusal counted and logged.

- :class:`BearerTokenInterceptor`: UNAUTHENTICATED without ``authorization: Bearer <token>`` metadata
  holding an accepted token (compared in constant time).
- :class:`AvailabilityInterceptor`: UNAVAILABLE while the server is loading its models or shutting down.

The health service is never refused, so load balancers and Kubernetes probes work without credentials
and see NOT_SERVING rather than an error; neither is server reflection while the server starts or drains.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from rnnmt.errors import RnnmtError
from rnnmt.serving.metrics import Metrics

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def read_tokens(token: str, token_file: Path | None) -> list[str]:
    """The accepted tokens: ``token``, or the non-blank lines of ``token_file``; none = no authentication."""
    if token_file is None:
        return [token] if token else []
    try:
        lines = token_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RnnmtError(f"cannot read --auth-token-file {token_file}: {exc.strerror}") from exc
    tokens = [line.strip() for line in lines if line.strip()]
    if not tokens:
        raise RnnmtError(f"--auth-token-file {token_file} holds no token")
    return tokens


def refusal(
    handler: grpc.RpcMethodHandler, method: str, code: grpc.StatusCode, message: str, metrics: Metrics
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that records the call and fails it with ``code``."""
    name = method.rsplit("/", 1)[-1]

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        metrics.record(name, code.name, 0.0, peer=context.peer())
        await context.abort(code, message)

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[handler.request_streaming, handler.response_streaming]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without an accepted bearer token, except health checks."""

    def __init__(self, tokens: Iterable[str], metrics: Metrics) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._metrics = metrics

    def accepts(self, metadata: Iterable[tuple[str, Any]]) -> bool:
        for key, value in metadata:
            if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
                given = value[7:].strip().encode()
                return any(hmac.compare_digest(given, token) for token in self._tokens)
        return False

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
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
