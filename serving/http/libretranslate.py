"""LibreTranslate's API on rnnmt's models, so that its clients, editor plugins and scripts work unchanged.

- ``POST /translate``: ``q`` (a string or a list), ``source`` (a code, or ``auto``), ``target``,
  ``format`` (``text`` or ``html``), ``alternatives`` (extra translations), ``api_key``. Answers
  ``{"translatedText": ...}`` (a string or a list, as ``q``), with ``"alternatives"`` (a list per text)
  when asked and, for ``auto``, ``"detectedLanguage": {"confidence", "language"}`` (a list of them, one
  per text, for a list ``q``).
- ``GET /languages``: ``[{"code", "name", "targets"}]``, one entry per source language served.
- ``POST /detect``: ``[{"confidence", "language"}]``, among the source languages served.
- ``GET /frontend/settings``: what this server offers LibreTranslate's page and clients (no token needed:
  it says whether one is).
- ``POST /suggest``: 403, suggestions are not collected here (LibreTranslate's answer when they are off).

Parameters come from the query string, a JSON body or a form body (JSON or form fields win over the
query string's), as LibreTranslate reads them. ``source`` and ``target`` choose the served model with
those languages (its latest version); with ``auto``, each text's language is detected among the
sources that have a model to ``target`` and the texts go to their models. Texts are translated sentence
by sentence, keeping their layout, through the same batcher as every other call. ``alternatives`` is a
whole number (digits in a form; empty is 0), at most the model's beam less one: alternative k joins
each sentence's k-th best translation (:func:`~rnnmt.serving.core.translator.join_translations`), the
translation itself is the one asked without alternatives, and alternatives equal to it or to one before
are left out, as LibreTranslate does. Language detection reads the start of each text only
(:mod:`rnnmt.serving.server.detect`).
Errors are ``{"error": "..."}`` with LibreTranslate's codes: 400 for a bad request, 403 for a missing or
wrong ``api_key`` (checked only when the server has tokens), 429 when busy, 500 otherwise.

**The token before the body.** On a server with tokens, ``/translate`` and ``/detect`` check the token
before reading the body when it comes first: in an ``Authorization: Bearer`` header (as on every other
endpoint) or an ``api_key`` query parameter. LibreTranslate's clients send ``api_key`` in the body,
though, where it can only be checked once the body is read and parsed; so that a caller without a token
cannot have the server read and parse bodies of up to ``--max-message-bytes``, such a body may have at
most :data:`TOKENLESS_BODY_BYTES` (64 KiB, tens of thousands of characters of text): a longer one is
refused with 403 as soon as the door knows (from ``Content-Length``, or while reading it), never parsed.
Larger bodies need the token in the header or the query. Without tokens, or with a token given first,
the limit is ``--max-message-bytes`` as everywhere.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rnnmt.serving.core.options import MAX_BEAM_SIZE, Decoding
from rnnmt.serving.documents.formats import FORMATS, BadDocument, read_document
from rnnmt.serving.http.calls import Door, HttpError, bad, bearer, fields
from rnnmt.serving.http.downloads import Downloads
from rnnmt.serving.server.api_keys import ApiKey
from rnnmt.serving.server.call import Observed, TranslationCall
from rnnmt.serving.server.detect import LanguageDetector
from rnnmt.serving.server.model_repository import ServedModel, shorten
from rnnmt.serving.server.service import TranslatorService, settle

T = TypeVar("T")

TOKENLESS_BODY_BYTES = 64 * 1024
"""The largest body read, on a server with tokens, from a caller that gave no token before it (see the
module docstring)."""

MAX_ALTERNATIVES = MAX_BEAM_SIZE - 1

FRONTEND_TIMEOUT_MS = 500
"""How long LibreTranslate's page waits after a keystroke before it translates (its default)."""

NAMES = {
    "ar": "Arabic", "ca": "Catalan", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "eu": "Basque", "fr": "French", "gl": "Galician", "it": "Italian", "la": "Latin", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "zh": "Chinese",
}  # fmt: skip
"""Language names for /languages; other codes are shown as they are."""


def lt_error(error: HttpError) -> JSONResponse:
    status = {401: 403, 404: 400}.get(error.http_status, error.http_status)
    return JSONResponse({"error": error.message}, status_code=status, headers=error.headers)


def served_pairs(service: TranslatorService) -> dict[tuple[str, str], ServedModel]:
    """(source, target) → the latest served version of the first model (by name) for that pair."""
    pairs: dict[tuple[str, str], ServedModel] = {}
    for versions in service.repository.models.values():
        latest = list(versions.values())[-1]
        manifest = latest.translator.manifest
        pairs.setdefault((manifest.source_language, manifest.target_language), latest)
    return pairs


@dataclass(frozen=True)
class TranslateCall:
    """A /translate call's parameters."""

    texts: list[str]
    many: bool  # q was a list
    source: str
    target: str
    alternatives: int
    format: str  # text or html


def parse_translate(body: dict[str, Any]) -> TranslateCall:
    q = body.get("q")
    if q is None:
        raise bad("Invalid request: missing q parameter")
    texts = [q] if isinstance(q, str) else q
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise bad("Invalid request: q must be a string or a list of strings")
    source, target = source_and_target(body)
    kind = string_field(body, "format", "text") or "text"
    if kind not in ("text", "html"):
        raise bad(f"Invalid request: format {shorten(kind)!r} is not supported; use text or html")
    alternatives = parse_alternatives(body.get("alternatives"))
    return TranslateCall(texts, not isinstance(q, str), source, target, alternatives, kind)


def source_and_target(params: dict[str, Any]) -> tuple[str, str]:
    source, target = string_field(params, "source"), string_field(params, "target")
    for name, value in (("source", source), ("target", target)):
        if not value:
            raise bad(f"Invalid request: missing {name} parameter")
    return source, target


def string_field(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise bad(f"Invalid request: {name} must be a string")
    return value


def parse_alternatives(value: Any) -> int:
    """``alternatives``: absent or empty (0), a whole number (not a bool), or its digits (in forms)."""
    if value is None or value == "":
        return 0
    digits = isinstance(value, str) and re.fullmatch(r"[0-9]{1,4}", value)
    if digits or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ALTERNATIVES:
        raise bad(f"Invalid request: alternatives must be a whole number from 0 to {MAX_ALTERNATIVES}")
    return value


class LibreTranslate:
    """The three endpoints over the service, the door's checks and the language detector."""

    def __init__(self, service: TranslatorService, door: Door, detector: LanguageDetector) -> None:
        self.service, self.door, self.detector = service, door, detector
        self.downloads = Downloads()

    def sources_to(self, target: str) -> list[str]:
        """The source languages served with a model to ``target`` (what ``auto`` chooses among)."""
        sources = sorted(s for s, t in served_pairs(self.service) if t == target)
        if not sources:
            raise bad(f"{shorten(target)} is not supported")
        return sources

    def model(self, source: str, target: str) -> ServedModel:
        pairs = served_pairs(self.service)
        if not any(s == source for s, _ in pairs):
            raise bad(f"{shorten(source)} is not supported")
        model = pairs.get((source, target))
        if model is None:
            raise bad(f"{shorten(target)} is not supported")
        return model

    async def params(self, request: Request, max_files: int = 0) -> tuple[dict[str, Any], ApiKey | None]:
        """The call's parameters, the query string's with the body's over them (and at most ``max_files``
        uploaded files), and its key once accepted (see the module docstring: it may be the body's
        ``api_key``)."""
        query = fields(request.query_params.multi_items())
        given = request.query_params.get("api_key", "")
        if not self.door.keys.enabled or bearer(request) or given:
            key = self.door.check(request, given)
            return {**query, **await self.door.body(request, max_files=max_files)}, key
        self.door.check_available()
        try:
            body = await self.door.body(request, TOKENLESS_BODY_BYTES, max_files)
        except HttpError as exc:
            if exc.http_status != 413:
                raise
            raise HttpError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"bodies over {TOKENLESS_BODY_BYTES} bytes need the token first: in 'Authorization: "
                "Bearer <token>' or the api_key query parameter",
            ) from None
        return {**query, **body}, self.door.check(request, str(body.get("api_key", "")))

    async def translate(self, request: Request, seen: Observed) -> Response:
        params, key = await self.params(request)
        call = parse_translate(params)
        seen.texts = len(call.texts)
        texts, source, target, alternatives = call.texts, call.source, call.target, call.alternatives
        alternatives = alternatives if call.format == "text" else 0  # none for HTML, as LibreTranslate
        self.service.admit(key, sum(len(text) for text in texts))
        detected: list[dict[str, Any]] = []
        if source == "auto":
            found = await self.detector.detect(texts, self.sources_to(target))
            detected = [{"confidence": confidence, "language": language} for language, confidence in found]
            languages = [language for language, _ in found]
        else:
            languages = [source] * len(texts)
        groups: dict[str, list[int]] = {}
        for i, language in enumerate(languages):
            groups.setdefault(language, []).append(i)
        models = {language: self.model(language, target) for language in groups}
        seen.model = ",".join(model.name for model in models.values())
        for model in models.values():
            beam = model.translator.default_options.beam_size
            if alternatives >= beam:
                raise bad(f"Invalid request: alternatives must be at most {beam - 1} with this model")
        calls = [self.translations(models[language], [texts[i] for i in group], alternatives, call.format)
                 for language, group in groups.items()]  # fmt: skip
        answers = await self.door.run(request, gather(calls))
        best = [""] * len(texts)
        others: list[list[str]] = [[] for _ in texts]
        for group, answer in zip(groups.values(), answers, strict=True):
            for i, hypotheses in zip(group, answer, strict=True):
                best[i], others[i] = hypotheses[0], unique(hypotheses[1:], hypotheses[0])
        many = call.many
        out: dict[str, Any] = {"translatedText": best if many else best[0]}
        if call.alternatives:
            out["alternatives"] = others if many else others[0]
        if detected:
            out["detectedLanguage"] = detected if many else detected[0]
        return JSONResponse(out)

    async def translate_file(self, request: Request, seen: Observed) -> Response:
        params, key = await self.params(request, max_files=1)
        upload = params.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise bad("Invalid request: missing file parameter")
        source, target = source_and_target(params)
        filename = PurePath(upload.filename).name
        try:
            document = await asyncio.to_thread(read_document, filename, await upload.read())
        except BadDocument as exc:
            raise bad(str(exc)) from None
        self.service.admit(key, sum(len(text) for text in document.texts))
        if source == "auto":
            ((source, _),) = await self.detector.detect([" ".join(document.texts)], self.sources_to(target))
        model = self.model(source, target)
        seen.model, seen.texts = model.name, len(document.texts)
        translated = await self.door.run(
            request, self.translations(model, document.texts, kind=document.format)
        )
        data = await asyncio.to_thread(document.rebuild, [hypotheses[0] for hypotheses in translated])
        token = self.downloads.put(filename, data)
        return JSONResponse(
            {"translatedFileUrl": f"{request.base_url}download_file/{token}/{quote(filename)}"}
        )

    async def download_file(self, request: Request, _seen: Observed) -> Response:
        stored = self.downloads.get(request.path_params["token"])
        if stored is None or request.path_params["name"] != stored.name:
            return JSONResponse({"error": "no such file: it expired or was never here"}, status_code=404)
        kind = mimetypes.guess_type(stored.name)[0] or "application/octet-stream"
        disposition = f"attachment; filename*=UTF-8''{quote(stored.name)}"
        return Response(stored.data, media_type=kind, headers={"Content-Disposition": disposition})

    async def translations(
        self, model: ServedModel, texts: list[str], alternatives: int = 0, kind: str = "text"
    ) -> list[list[str]]:
        """Per text, its translation and then its alternatives, sentence by sentence, by ``model``."""
        decoding = Decoding(n_best=alternatives + 1) if alternatives else Decoding()
        call = TranslationCall(texts, decoding, format=kind, split=True)
        return [[h.text for h in hypotheses] for hypotheses in await self.service.translate_many(model, call)]

    async def languages(self, request: Request, _seen: Observed) -> Response:
        # The key may be in the body: LibreTranslate's Python client sends it in a GET's form body.
        await self.params(request)
        targets: dict[str, list[str]] = {}
        for source, target in served_pairs(self.service):
            targets.setdefault(source, []).append(target)
        return JSONResponse(
            [
                {"code": code, "name": NAMES.get(code, code), "targets": sorted(targets[code])}
                for code in sorted(targets)
            ]
        )

    async def detect(self, request: Request, seen: Observed) -> Response:
        params, key = await self.params(request)
        q = params.get("q")
        if not isinstance(q, str) or not q.strip():
            raise bad("Invalid request: missing q parameter")
        seen.texts = 1
        self.service.admit(key, len(q))
        ((language, confidence),) = await self.detector.detect([q])
        return JSONResponse([{"confidence": confidence, "language": language}])

    async def frontend_settings(self, _request: Request, _seen: Observed) -> Response:
        """LibreTranslate's settings: the character limit (``--char-limit``; -1 for none), whether a key
        is needed, no suggestions, the file formats, and the default model's languages."""
        self.door.check_available()
        repository = self.service.repository
        default = repository.get(repository.default).translator.manifest
        keys = self.door.keys.enabled
        return JSONResponse(
            {
                "charLimit": self.service.char_limit or -1,
                "frontendTimeout": FRONTEND_TIMEOUT_MS,
                "apiKeys": keys,
                "keyRequired": keys,
                "suggestions": False,
                "filesTranslation": True,
                "supportedFilesFormat": list(FORMATS),
                "language": {
                    "source": {"code": "auto", "name": "Auto Detect"},
                    "target": {
                        "code": default.target_language,
                        "name": NAMES.get(default.target_language, default.target_language),
                    },
                },
            }
        )

    async def suggest(self, _request: Request, _seen: Observed) -> Response:
        raise HttpError(grpc.StatusCode.PERMISSION_DENIED, "Suggestions are disabled on this server.")


async def gather(calls: Sequence[Awaitable[T]]) -> list[T]:
    """The results of ``calls`` run at once; the first error cancels the others."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        await settle(set(tasks))


def unique(alternatives: Sequence[str], translation: str) -> list[str]:
    """``alternatives`` without those equal to ``translation``, to an earlier one, or empty."""
    seen = {translation, ""}
    kept = []
    for text in alternatives:
        if text not in seen:
            seen.add(text)
            kept.append(text)
    return kept


def routes(service: TranslatorService, door: Door, detector: LanguageDetector) -> list[Route]:
    api = LibreTranslate(service, door, detector)
    return [
        Route(path, door.endpoint(f"HTTP {path}", endpoint, lt_error), methods=[method])
        for path, endpoint, method in (
            ("/translate", api.translate, "POST"),
            ("/languages", api.languages, "GET"),
            ("/detect", api.detect, "POST"),
            ("/frontend/settings", api.frontend_settings, "GET"),
            ("/suggest", api.suggest, "POST"),
            ("/translate_file", api.translate_file, "POST"),
            ("/download_file/{token}/{name}", api.download_file, "GET"),
        )
    ]
