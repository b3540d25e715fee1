"""LibreTranslate's API on rnnmt's models, so that its clients, editor plugins and scripts work unchanged.

- ``POST /translate``: ``q`` (a string or a list), ``source`` (a code, or ``auto``), ``target``,
  ``format`` (``text``), ``alternatives`` (extra translations, at most the beam), ``api_key``; JSON or
  form bodies. Answers ``{"translatedText": ...}`` (a string or a list, as ``q``), with
  ``"alternatives"`` when asked and ``"detectedLanguage": {"confidence", "language"}`` for ``auto``.
- ``GET /languages``: ``[{"code", "name", "targets"}]``, one entry per source language served.
- ``POST /detect``: ``[{"confidence", "language"}]``, among the source languages served.

``source`` and ``target`` choose the served model with those languages (its latest version). Texts are
translated sentence by sentence, keeping their layout, through the same batcher as every other call.
Errors are ``{"error": "..."}`` with LibreTranslate's codes: 400 for a bad request, 403 for a missing or
wrong ``api_key`` (checked only when the server has tokens), 429 when busy, 500 otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rnnmt.serving.http.calls import Door, HttpError
from rnnmt.serving.http.detect import LanguageDetector
from rnnmt.serving.server.model_repository import ServedModel
from rnnmt.serving.server.service import TranslatorService
from rnnmt.v1 import translator_pb2 as pb

NAMES = {
    "ar": "Arabic", "ca": "Catalan", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "eu": "Basque", "fr": "French", "gl": "Galician", "it": "Italian", "la": "Latin", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "zh": "Chinese",
}  # fmt: skip
"""Language names for /languages; other codes are shown as they are."""


def lt_error(error: HttpError) -> JSONResponse:
    status = {401: 403, 404: 400}.get(error.http_status, error.http_status)
    return JSONResponse({"error": error.message}, status_code=status)


Endpoint = Callable[["LibreTranslate", Request], Awaitable[Response]]


def lt_endpoint(endpoint: Endpoint) -> Endpoint:
    """An endpoint whose :class:`HttpError` becomes LibreTranslate's error body."""

    async def wrapped(self: LibreTranslate, request: Request) -> Response:
        try:
            return await endpoint(self, request)
        except HttpError as exc:
            return lt_error(exc)

    return wrapped


def bad(message: str) -> HttpError:
    return HttpError(grpc.StatusCode.INVALID_ARGUMENT, message)


def served_pairs(service: TranslatorService) -> dict[tuple[str, str], ServedModel]:
    """(source, target) → the latest served version of the first model (by name) for that pair."""
    pairs: dict[tuple[str, str], ServedModel] = {}
    for versions in service.repository.models.values():
        latest = list(versions.values())[-1]
        manifest = latest.translator.manifest
        pairs.setdefault((manifest.source_language, manifest.target_language), latest)
    return pairs


def parse_translate(body: dict[str, Any]) -> tuple[list[str], bool, str, str, int]:
    """(texts, whether q was a list, source, target, alternatives) of a /translate body."""
    q, source, target = body.get("q"), str(body.get("source", "")), str(body.get("target", ""))
    if q is None:
        raise bad("Invalid request: missing q parameter")
    texts = [q] if isinstance(q, str) else q
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise bad("Invalid request: q must be a string or a list of strings")
    for name, value in (("source", source), ("target", target)):
        if not value:
            raise bad(f"Invalid request: missing {name} parameter")
    if str(body.get("format", "text")) != "text":
        raise bad(f"Invalid request: format {body.get('format')!r} is not supported; use text")
    try:
        alternatives = int(body.get("alternatives", 0) or 0)
    except (TypeError, ValueError):
        raise bad("Invalid request: alternatives must be a whole number") from None
    return texts, not isinstance(q, str), source, target, alternatives


class LibreTranslate:
    """The three endpoints over the service, the door's checks and the language detector."""

    def __init__(self, service: TranslatorService, door: Door, detector: LanguageDetector) -> None:
        self.service, self.door, self.detector = service, door, detector

    def model(self, source: str, target: str) -> ServedModel:
        pairs = served_pairs(self.service)
        if not any(s == source for s, _ in pairs):
            raise bad(f"{source} is not supported")
        model = pairs.get((source, target))
        if model is None:
            raise bad(f"{target} is not supported")
        return model

    @lt_endpoint
    async def translate(self, request: Request) -> Response:
        body = await self.door.body(request)
        self.door.check(request, str(body.get("api_key", "")))
        texts, many, source, target, alternatives = parse_translate(body)
        detected = None
        if source == "auto":
            language, confidence = self.detector.detect(" ".join(texts))
            detected, source = {"confidence": confidence, "language": language}, language
        model = self.model(source, target)
        message = pb.TranslateRequest(texts=texts, model=model.name, model_version=model.version)
        if alternatives:  # n-best lists: the texts are translated whole
            beam = max(alternatives + 1, model.translator.default_options.beam_size)
            message.options.CopyFrom(pb.DecodingOptions(beam_size=beam, n_best=alternatives + 1))
        else:
            message.split_sentences = True
        response = await self.door.run(request, "HTTP /translate", self.service.translate(message, None))
        best = [t.hypotheses[0].text for t in response.translations]
        out: dict[str, Any] = {"translatedText": best if many else best[0]}
        if alternatives:
            others = [[h.text for h in t.hypotheses[1:]] for t in response.translations]
            out["alternatives"] = others if many else others[0]
        if detected is not None:
            out["detectedLanguage"] = detected
        return JSONResponse(out)

    @lt_endpoint
    async def languages(self, request: Request) -> Response:
        self.door.check(request, request.query_params.get("api_key", ""))
        targets: dict[str, list[str]] = {}
        for source, target in served_pairs(self.service):
            targets.setdefault(source, []).append(target)
        return JSONResponse(
            [
                {"code": code, "name": NAMES.get(code, code), "targets": sorted(targets[code])}
                for code in sorted(targets)
            ]
        )

    @lt_endpoint
    async def detect(self, request: Request) -> Response:
        body = await self.door.body(request)
        self.door.check(request, str(body.get("api_key", "")))
        q = body.get("q")
        if not isinstance(q, str) or not q.strip():
            raise bad("Invalid request: missing q parameter")
        language, confidence = self.detector.detect(q)
        return JSONResponse([{"confidence": confidence, "language": language}])


def routes(service: TranslatorService, door: Door, detector: LanguageDetector) -> list[Route]:
    api = LibreTranslate(service, door, detector)
    return [
        Route("/translate", api.translate, methods=["POST"]),
        Route("/languages", api.languages, methods=["GET"]),
        Route("/detect", api.detect, methods=["POST"]),
    ]
