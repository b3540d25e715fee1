"""The HTTP/JSON API, in the same process and on the same batcher as gRPC: ``POST /v1/translate`` and
``GET /v1/models`` mirror the proto with the gRPC-gateway JSON mapping (lowerCamel field names), plus
LibreTranslate's endpoints (:mod:`rnnmt.serving.http.libretranslate`), the page at ``/`` and the
OpenAPI document at ``/openapi.json``.

On ``/v1/translate``, ``splitSentences`` defaults to true: a paragraph is translated sentence by
sentence and keeps its layout (gRPC keeps the proto default, false).

For browsers: only requests whose ``Host`` is one of :func:`allowed_hosts` are answered (another is 400),
so that a site whose name was made to resolve to this server's address (DNS rebinding) cannot reach it
through its visitors' browsers; every response says ``X-Content-Type-Options: nosniff``; the page may not
be framed and runs only its own script and style (:mod:`rnnmt.serving.http.page`).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnmt.serving.http import libretranslate, page
from rnnmt.serving.http.calls import Door, bad
from rnnmt.serving.server import protocol
from rnnmt.serving.server.call import Observed
from rnnmt.serving.server.model_repository import shorten
from rnnmt.serving.server.service import TranslatorService
from rnnmt.v1 import translator_pb2 as pb

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def parse(body: dict[str, Any], message: pb.TranslateRequest) -> pb.TranslateRequest:
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        raise bad(f"the body is not a TranslateRequest: {exc}") from None


def parse_timeout(value: Any) -> float | None:
    """``timeout``: absent, or a finite number of seconds above 0 (not a bool)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
        if 0 < seconds < math.inf:
            return seconds
    raise bad("timeout must be a finite number of seconds above 0")


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def allowed_hosts(bound: str, listed: str) -> list[str]:
    """The ``Host`` names answered (a port aside) by the door bound to ``bound``: those ``listed``
    (comma-separated, ``*.example.com`` wildcards), else, bound to a loopback address, the local names and
    that address, else any (``*``: a server on the network is reached by names it cannot know)."""
    names = [name.strip() for name in listed.split(",") if name.strip()]
    if names:
        return names
    try:
        loopback = bound == "localhost" or ipaddress.ip_address(bound).is_loopback
    except ValueError:  # a host name
        loopback = False
    if not loopback:
        return ["*"]
    return list(dict.fromkeys([*LOCAL_HOSTS, f"[{bound}]" if ":" in bound else bound]))


class NoSniff:
    """ASGI middleware: every response says ``X-Content-Type-Options: nosniff`` (a browser takes a JSON
    error for JSON, never for a script or a page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, sending)


def http_app(service: TranslatorService, door: Door, hosts: list[str]) -> Starlette:
    """The ASGI application of the HTTP door over ``service`` (whose repository and batcher are
    attached by the time calls are let through by ``door``), answering requests for ``hosts`` (see
    :func:`allowed_hosts`)."""
    detector = service.detector

    async def translate(request: Request, seen: Observed) -> Response:
        key = door.check(request)
        body = await door.body(request)
        message = parse({k: v for k, v in body.items() if k != "timeout"}, pb.TranslateRequest())
        seen.model, seen.texts = shorten(message.model), len(message.texts)
        service.admit(key, sum(len(text) for text in message.texts))
        if "splitSentences" not in body and "split_sentences" not in body:
            message.split_sentences = True
        model = service.model(message.model, message.model_version)
        call = protocol.translation_call(message, parse_timeout(body.get("timeout")))
        answer = await door.run(request, service.answer(model, call))
        return JSONResponse(to_json(protocol.translate_response(model, *answer)))

    async def models(request: Request, _seen: Observed) -> Response:
        door.check(request)
        return JSONResponse(to_json(service.model_info(request.query_params.get("model", ""))))

    async def openapi(_request: Request) -> Response:
        return JSONResponse(OPENAPI)

    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/translate", door.endpoint("HTTP /v1/translate", translate), methods=["POST"]),
        Route("/v1/models", door.endpoint("HTTP /v1/models", models), methods=["GET"]),
        *libretranslate.routes(service, door, detector),
        *page.routes(),
    ]
    middleware = [
        Middleware(NoSniff),
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False),
    ]
    return Starlette(routes=routes, middleware=middleware)


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer"},
                    "status": {"type": "string"},
                    "message": {"type": "string"},
                },
            }
        },
    }


_ERRORS = {
    str(code): {"description": text, "content": {"application/json": {"schema": _error_schema()}}}
    for code, text in (
        (400, "INVALID_ARGUMENT: a field out of range, named in the message"),
        (401, "UNAUTHENTICATED: no valid bearer token"),
        (404, "NOT_FOUND: no such model or version"),
        (413, "the body is over the server's limit"),
        (429, "RESOURCE_EXHAUSTED: the queue is full; retry later"),
        (503, "UNAVAILABLE: starting or shutting down"),
        (504, "DEADLINE_EXCEEDED: the timeout passed before the work was done"),
    )
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "rnnmt",
        "version": "1",
        "description": "Machine translation over HTTP/JSON: the rnnmt.v1.Translator service of "
        "protos/rnnmt/v1/translator.proto in the gRPC-gateway JSON mapping, and LibreTranslate's API.",
    },
    "paths": {
        "/v1/translate": {
            "post": {
                "summary": "Translate texts (a TranslateRequest as JSON; splitSentences defaults to true)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["texts"],
                                "properties": {
                                    "texts": {"type": "array", "items": {"type": "string"}},
                                    "model": {"type": "string"},
                                    "modelVersion": {"type": "string"},
                                    "splitSentences": {"type": "boolean", "default": True},
                                    "format": {"type": "string", "enum": ["text", "html"]},
                                    "detectLanguage": {"type": "boolean", "default": False},
                                    "timeout": {"type": "number", "description": "seconds"},
                                    "options": {
                                        "type": "object",
                                        "properties": {
                                            "beamSize": {"type": "integer"},
                                            "nBest": {"type": "integer"},
                                            "lengthPenalty": {"type": "number"},
                                            "maxOutputTokens": {"type": "integer"},
                                        },
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "a TranslateResponse as JSON"}, **_ERRORS},
            }
        },
        "/v1/models": {
            "get": {
                "summary": "The models and versions served (a ModelInfo as JSON)",
                "parameters": [{"name": "model", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "a ModelInfo as JSON"}, **_ERRORS},
            }
        },
        "/translate": {"post": {"summary": "LibreTranslate: translate q from source to target"}},
        "/languages": {"get": {"summary": "LibreTranslate: the languages and their targets"}},
        "/detect": {"post": {"summary": "LibreTranslate: detect the language of q among the sources served"}},
        "/frontend/settings": {"get": {"summary": "LibreTranslate: what this server offers its page"}},
        "/suggest": {"post": {"summary": "LibreTranslate: suggestions (403: not collected here)"}},
    },
}
