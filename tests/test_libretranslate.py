"""LibreTranslate's API as its clients use it: parameters in the query string, a form or JSON, alternatives
with sentence splitting, a detected language per text, the settings its page reads, and suggestions
answered as unsupported."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import relabelled_copies
from servers import ServerThread, running
from test_http import PARAGRAPH, TRANSLATED, call
from test_http_requests import send

from rnnmt.serving.client import TranslatorClient
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

TRANSLATE = {"q": PARAGRAPH, "source": "es", "target": "en"}


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1, http_port=0) as s:
        yield s


@pytest.fixture(scope="module")
def port(server: ServerThread) -> int:
    return server.server.http_port


def query(params: dict[str, Any]) -> str:
    return "/translate?" + urllib.parse.urlencode(params)


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        (query(TRANSLATE), None, ""),  # a POST without a body
        (query(TRANSLATE), b"", "application/x-www-form-urlencoded"),
        ("/translate", urllib.parse.urlencode(TRANSLATE).encode(), "application/x-www-form-urlencoded"),
        ("/translate", json.dumps(TRANSLATE).encode(), "application/json"),
        (query({"q": PARAGRAPH, "target": "xx"}), json.dumps({"source": "es", "target": "en"}).encode(), "application/json"),
    ],
    ids=["query", "query-empty-form", "form", "json", "json-over-query"],
)  # fmt: skip
def test_parameters_from_the_query_string_a_form_or_json(
    port: int, path: str, body: bytes | None, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, answer = send(port, path, body if body is not None else b"", content_type, headers)
    assert (status, answer) == (200, {"translatedText": TRANSLATED})


def test_alternatives_keep_every_sentence_and_the_translation(port: int) -> None:
    status, _, answer = send(port, "/translate", {**TRANSLATE, "alternatives": 3})
    assert status == 200 and answer["translatedText"] == TRANSLATED
    alternatives = answer["alternatives"]
    assert 1 <= len(alternatives) <= 3 and len(set(alternatives)) == len(alternatives)
    assert TRANSLATED not in alternatives
    assert all(text.count("\n\n") == 1 for text in alternatives)  # the paragraph's layout
    status, _, listed = send(
        port, "/translate", {**TRANSLATE, "q": [PARAGRAPH, "El perro come pan."], "alternatives": 3}
    )
    assert status == 200 and listed["translatedText"] == [TRANSLATED, "The dog eats bread."]
    assert listed["alternatives"][0] == alternatives and len(listed["alternatives"]) == 2


def test_n_best_with_sentence_splitting_on_the_json_api(server: ServerThread, port: int) -> None:
    """/v1/translate splits by default: n-best lists are joined per sentence, the first the translation."""
    status, answer = call(port, "/v1/translate", {"texts": [PARAGRAPH], "options": {"nBest": 3}})
    assert status == 200, answer
    hypotheses = answer["translations"][0]["hypotheses"]
    assert len(hypotheses) == 3 and hypotheses[0]["text"] == TRANSLATED
    assert all(h["text"].count("\n\n") == 1 for h in hypotheses)


def test_the_settings_libretranslates_page_reads(port: int) -> None:
    assert call(port, "/frontend/settings") == (
        200,
        {
            "charLimit": -1,
            "frontendTimeout": 500,
            "apiKeys": False,
            "keyRequired": False,
            "suggestions": False,
            "filesTranslation": True,
            "supportedFilesFormat": [".txt", ".srt", ".vtt", ".docx", ".pptx", ".odt", ".html", ".htm", ".md", ".markdown"],
            "language": {"source": {"code": "auto", "name": "Auto Detect"}, "target": {"code": "en", "name": "English"}},
        },
    )  # fmt: skip


def test_settings_say_a_key_is_needed_and_suggestions_are_refused(model_dir: Path) -> None:
    with running(model_dir, workers=1, http_port=0, auth_token="s3cret", allow_insecure_token=True) as s:
        port = s.server.http_port
        status, settings = call(port, "/frontend/settings")  # readable without the key: it says one is needed
        assert status == 200 and settings["apiKeys"] is True and settings["keyRequired"] is True
        suggestion = {"q": "Hola", "s": "Hello", "source": "es", "target": "en", "api_key": "s3cret"}
        assert call(port, "/suggest", suggestion) == (
            403,
            {"error": "Suggestions are disabled on this server."},
        )


@pytest.fixture(scope="module")
def two_to_english_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """The toy model (es→en) and a copy of it that says it translates French: two sources to English."""
    copies = {"toy": {}, "toy-fr": {"source_language": "fr"}}
    root = relabelled_copies(tmp_path_factory.mktemp("two_to_english"), model_dir / "toy", copies)
    with running(root, workers=1, http_port=0, default_model="toy") as s:
        yield s


@pytest.fixture(scope="module")
def two_to_english(two_to_english_server: ServerThread) -> int:
    return two_to_english_server.server.http_port


def test_each_text_of_a_list_has_its_detected_language_and_model(two_to_english: int) -> None:
    spanish, french = (
        "El perro come pan y el niño bebe agua.",
        "Le chien mange du pain et le garçon boit de l'eau.",
    )
    texts = [spanish, french, spanish]
    status, _, answer = send(two_to_english, "/translate", {"q": texts, "source": "auto", "target": "en"})
    assert status == 200, answer
    assert [d["language"] for d in answer["detectedLanguage"]] == ["es", "fr", "es"]
    assert all(0 < d["confidence"] <= 100 for d in answer["detectedLanguage"])
    alone = [send(two_to_english, "/translate", {"q": t, "source": s, "target": "en"})[2]["translatedText"]
             for t, s in zip(texts, ["es", "fr", "es"], strict=True)]  # fmt: skip
    assert answer["translatedText"] == alone
    status, _, one = send(two_to_english, "/translate", {"q": french, "source": "auto", "target": "en"})
    assert status == 200 and one["detectedLanguage"]["language"] == "fr"


def test_a_text_sent_to_the_wrong_model_is_noticed_on_both_doors(two_to_english_server: ServerThread) -> None:
    """``detectLanguage``: each text's language, among all those served, beside its translation."""
    port, spanish = two_to_english_server.server.http_port, "El perro come pan y el niño bebe agua."
    body = {"texts": [spanish], "model": "toy-fr", "detectLanguage": True}
    status, answer = call(port, "/v1/translate", body)
    assert status == 200, answer
    detected = answer["translations"][0]["detectedLanguage"]
    assert detected["language"] == "es" and 50 < detected["confidence"] <= 100
    assert "detectedLanguage" not in call(port, "/v1/translate", {"texts": [spanish]})[1]["translations"][0]
    with grpc.insecure_channel(two_to_english_server.target) as channel:
        request = pb.TranslateRequest(texts=[spanish], model="toy-fr", detect_language=True)
        [translation] = pb_grpc.TranslatorStub(channel).Translate(request, timeout=60).translations
    assert translation.detected_language.language == "es"
    assert translation.hypotheses[0].text == answer["translations"][0]["hypotheses"][0]["text"]


def test_the_character_limit_holds_on_every_door_and_every_call_is_counted(model_dir: Path) -> None:
    """``--char-limit`` as LibreTranslate's: the settings say it, and a longer call is refused on
    LibreTranslate's routes, /v1/translate and gRPC alike. Refused calls are counted like the others."""
    limit = len("El perro come pan.")
    with running(model_dir, workers=1, http_port=0, char_limit=limit) as s:
        port = s.server.http_port
        assert call(port, "/frontend/settings")[1]["charLimit"] == limit
        refused = f"the texts have {limit + 1} characters; at most {limit} per call on this server"
        long = "El perro come pan. "
        assert call(port, "/translate", {"q": long, "source": "es", "target": "en"}) == (
            400,
            {"error": refused},
        )
        assert call(
            port, "/translate", {"q": ["El perro ", "come pan. "], "source": "es", "target": "en"}
        ) == (
            400,
            {"error": refused},
        )
        status, answer = call(port, "/v1/translate", {"texts": [long]})
        assert (status, answer["error"]["message"]) == (400, refused)
        with TranslatorClient(s.target) as client, pytest.raises(grpc.RpcError) as error:
            client.translate([long])
        assert (error.value.code(), error.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, refused)
        status, _, answer = send(port, "/translate", {"q": long.strip(), "source": "es", "target": "en"})
        assert (status, answer) == (200, {"translatedText": "The dog eats bread."})
        assert s.metric("rnnmt_requests_total", method="HTTP /translate", code="INVALID_ARGUMENT") == 2
        assert s.metric("rnnmt_requests_total", method="HTTP /translate", code="OK") == 1
        assert s.metric("rnnmt_requests_total", method="HTTP /v1/translate", code="INVALID_ARGUMENT") == 1
        assert s.metric("rnnmt_requests_total", method="Translate", code="INVALID_ARGUMENT") == 1
