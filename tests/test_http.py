"""The HTTP door of `rnnmt serve`: the JSON API beside gRPC on the same batcher, LibreTranslate's API,
errors with the HTTP codes of their gRPC codes, tokens, and the page."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import ServerThread, running

from rnnmt.serving.client import TranslatorClient

PARAGRAPH = "El perro come pan. Un gato bebe agua.\n\nEl niño ve pan."
TRANSLATED = "The dog eats bread. A cat drinks water.\n\nThe boy sees bread."


def call(port: int, path: str, body: Any = None, form: bool = False, token: str = "") -> tuple[int, Any]:
    """(HTTP status, parsed JSON or text) of one call to the server's HTTP door."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body, doseq=True).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=2, http_port=0, max_message_bytes=64 * 1024) as s:
        yield s


def test_the_json_api_mirrors_grpc_and_splits_paragraphs(server: ServerThread) -> None:
    port = server.server.http_port
    status, body = call(port, "/v1/translate", {"texts": [PARAGRAPH, "Un gato bebe agua."]})
    assert status == 200, body
    assert [t["hypotheses"][0]["text"] for t in body["translations"]] == [TRANSLATED, "A cat drinks water."]
    assert body["model"] == "toy"
    with TranslatorClient(server.target) as client:
        grpc_answer = client.translate(["Un gato bebe agua."], beam_size=3, n_best=2)
    status, body = call(
        port,
        "/v1/translate",
        {"texts": ["Un gato bebe agua."], "options": {"beamSize": 3, "nBest": 2}, "splitSentences": False},
    )
    assert [(h["text"], h["score"]) for h in body["translations"][0]["hypotheses"]] == [
        (h.text, pytest.approx(h.score)) for h in grpc_answer[0].hypotheses
    ]
    status, models = call(port, "/v1/models")
    assert status == 200 and models["defaultModel"] == "toy" and models["models"][0]["sourceLanguage"] == "es"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "the body is not valid JSON"),
        ({"texts": ["x"], "options": {"beamSize": 99}}, 400, "options.beam_size must be 1 to 16, not 99"),
        ({"texts": ["x"], "model": "nope"}, 404, "model 'nope' is not served here"),
        ({"texts": ["x"], "bogus": 1}, 400, "the body is not a TranslateRequest"),
        ({"texts": ["perro " * 20_000]}, 413, "this server accepts at most 65536"),
    ],
)
def test_errors_have_the_http_code_of_their_grpc_code(
    server: ServerThread, body: Any, status: int, message: str
) -> None:
    got, answer = call(server.server.http_port, "/v1/translate", body)
    assert got == status
    assert message in answer["error"]["message"] and answer["error"]["code"] == status


def test_libretranslate_clients_work_unchanged(server: ServerThread) -> None:
    port = server.server.http_port
    assert call(port, "/languages") == (200, [{"code": "es", "name": "Spanish", "targets": ["en"]}])
    assert call(port, "/translate", {"q": "El perro come pan.", "source": "es", "target": "en"}) == (
        200,
        {"translatedText": "The dog eats bread."},
    )
    status, body = call(
        port,
        "/translate",
        {"q": ["Un gato bebe agua.", PARAGRAPH], "source": "auto", "target": "en"},
        form=True,
    )
    assert status == 200 and body["translatedText"] == ["A cat drinks water.", TRANSLATED]
    assert body["detectedLanguage"] == [{"confidence": 100.0, "language": "es"}] * 2
    status, body = call(
        port, "/translate", {"q": "Un gato bebe agua.", "source": "es", "target": "en", "alternatives": 2}
    )
    assert status == 200 and len(body["alternatives"]) == 2
    assert call(port, "/translate", {"q": "x", "source": "fr", "target": "en"}) == (
        400,
        {"error": "fr is not supported"},
    )
    assert call(port, "/translate", {"source": "es", "target": "en"}) == (
        400,
        {"error": "Invalid request: missing q parameter"},
    )
    assert call(port, "/detect", {"q": "El perro come pan."}) == (
        200,
        [{"confidence": 100.0, "language": "es"}],
    )


def test_the_page_and_the_openapi_document_are_served(server: ServerThread) -> None:
    status, page = call(server.server.http_port, "/")
    assert status == 200 and "<title>rnnmt</title>" in page and 'for="source"' in page
    status, document = call(server.server.http_port, "/openapi.json")
    assert status == 200 and set(document["paths"]) >= {
        "/v1/translate",
        "/v1/models",
        "/translate",
        "/languages",
        "/frontend/settings",
    }


def test_tokens_guard_the_http_door_too(model_dir: Path) -> None:
    settings = {"auth_token": "s3cret", "allow_insecure_token": True}
    with running(model_dir, workers=1, http_port=0, **settings) as s:
        port = s.server.http_port
        status, body = call(port, "/v1/translate", {"texts": ["x"]})
        assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
        assert call(port, "/v1/translate", {"texts": ["Pan."]}, token="s3cret")[0] == 200
        assert call(port, "/translate", {"q": "Pan.", "source": "es", "target": "en"})[0] == 403
        ok = call(port, "/translate", {"q": "Pan.", "source": "es", "target": "en", "api_key": "s3cret"})
        assert ok[0] == 200
