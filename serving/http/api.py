"""The HTTP/JSON API, in the same process and on the same batcher as gRPC: ``POST /v1/translate`` and
``GET /v1/models`` mirror the proto with the gRPC-gateway JSON mapping (lowerCamel field names), plus
LibreTranslate's endpoints (:mod:`rnnmt.serving.http.libretranslate`), the page at ``/`` and the
OpenAPI document at ``/openapi.json``.

On ``/v1/translate``, ``splitSentences`` defaults to true: a paragraph is translated sentence by
sentence and keeps its layout (gRPC keeps the proto default, false).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from rnnmt.serving.http import libretranslate
from rnnmt.serving.http.calls import Door, HttpError, handle_errors
from rnnmt.serving.http.detect import LanguageDetector
from rnnmt.serving.server.service import TranslatorService
from rnnmt.v1 import translator_pb2 as pb


def parse(body: dict[str, Any], message: pb.TranslateRequest) -> pb.TranslateRequest:
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        raise HttpError(
            grpc.StatusCode.INVALID_ARGUMENT, f"the body is not a TranslateRequest: {exc}"
        ) from None


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def http_app(service: TranslatorService, door: Door) -> Starlette:
    """The ASGI application of the HTTP door over ``service`` (whose repository and batcher are
    attached by the time calls are let through by ``door``)."""
    page = resources.files("rnnmt.serving.http").joinpath("page.html").read_text(encoding="utf-8")
    detector = LanguageDetector(lambda: service.repository)

    @handle_errors
    async def translate(request: Request) -> Response:
        door.check(request)
        body = await door.body(request)
        message = parse({k: v for k, v in body.items() if k != "timeout"}, pb.TranslateRequest())
        if "splitSentences" not in body and "split_sentences" not in body:
            message.split_sentences = True
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, "timeout must be a number of seconds above 0")
        response = await door.run(request, "HTTP /v1/translate", service.translate(message, timeout))
        return JSONResponse(to_json(response))

    @handle_errors
    async def models(request: Request) -> Response:
        door.check(request)
        wanted = pb.GetModelInfoRequest(model=request.query_params.get("model", ""))

        async def describe() -> pb.ModelInfo:
            return service.model_info(wanted)

        return JSONResponse(to_json(await door.run(request, "HTTP /v1/models", describe())))

    async def index(_request: Request) -> Response:
        return HTMLResponse(page)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(OPENAPI)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/translate", translate, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        *libretranslate.routes(service, door, detector),
    ]
    return Starlette(routes=routes)


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
    },
}
