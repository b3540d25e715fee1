"""HTML through the doors: the text between tags translated, every tag, attribute, entity and comment
outside it byte for byte, nothing translated in script, style, code, pre or translate="no"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import ServerThread, running
from test_documents import fetch, translate_file
from test_http import call

from rnnmt.serving.documents.html import html_texts, put_back, tokens_of
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

PAGE = """<!DOCTYPE html>
<html lang="es"><head><title>El perro</title><style>p { color: red }</style></head>
<body>
  <p class="x">El <b>perro</b> come&nbsp;pan &amp; agua.</p>
  <!-- un comentario -->
  <p translate="no">Marca <i>registrada</i></p><br/><img src="a.png" alt="un gato">
  <pre>  código   </pre><script>var x = "<p>hola</p>";</script>
  Un gato
</body></html>"""


def markup(text: str) -> list[str]:
    """The markup of a document (tags, comments, declarations), in order, as written."""
    return [text[a:b] for token, a, b in tokens_of(text) if token.kind == "markup"]


def upper(text: str) -> str:
    texts, spans, _ = html_texts(text)
    return put_back(text, spans, [t.upper() for t in texts])


def test_only_the_text_between_tags_is_translated() -> None:
    assert html_texts(PAGE)[0] == ["El perro", "El ", "perro", " come\xa0pan & agua.", "\n  Un gato\n"]
    assert upper(PAGE) == (
        PAGE.replace("<title>El perro", "<title>EL PERRO")
        .replace("El <b>perro</b> come&nbsp;pan &amp; agua.", "EL <b>PERRO</b> COME\xa0PAN &amp; AGUA.")
        .replace("\n  Un gato\n", "\n  UN GATO\n")
    )


def test_elements_inside_kept_ones_stay_kept() -> None:
    fragment = '<div translate="no"><p>Hola <b>mundo</b></p></div><p>Adiós</p><code><b>x</b> y</code>'
    assert html_texts(fragment)[0] == ["Adiós"]


PIECES = [
    "<p>", "</p>", '<b class="x">', "</b>", "<br/>", "<br>", "<!-- c -->", "&amp;", "&nbsp;", "&#233;",
    "perro", " ", "\n", "come pan.", "<script>", "</script>", "<pre>", "</pre>", "<a href='?a=1&b=2'>", "</a>",
]  # fmt: skip


@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=30).map("".join))
def test_any_html_comes_back_with_the_same_markup(text: str) -> None:
    assert markup(upper(text)) == markup(text)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1, http_port=0) as s:
        yield s


def test_html_on_every_door(server: ServerThread) -> None:
    port, html = (
        server.server.http_port,
        '<p class="a">El perro come pan.</p>\n<p><i>Un gato bebe agua.</i></p>',
    )
    english = '<p class="a">The dog eats bread.</p>\n<p><i>A cat drinks water.</i></p>'
    status, answer = call(port, "/v1/translate", {"texts": [html], "format": "html"})
    assert status == 200 and answer["translations"][0]["hypotheses"][0]["text"] == english
    status, answer = call(
        port, "/translate", {"q": html, "source": "es", "target": "en", "format": "html", "alternatives": 2}
    )
    assert (status, answer) == (200, {"translatedText": english, "alternatives": []})
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        response = stub.Translate(pb.TranslateRequest(texts=[html], format="html"), timeout=30)
        assert response.translations[0].hypotheses[0].text == english
        with pytest.raises(grpc.RpcError) as refused:
            stub.Translate(
                pb.TranslateRequest(texts=[html], format="html", options=pb.DecodingOptions(n_best=2)),
                timeout=30,
            )
        assert refused.value.details() == "options.n_best must be 1 with format html"
        with pytest.raises(grpc.RpcError) as refused:
            stub.Translate(pb.TranslateRequest(texts=[html], format="markdown"), timeout=30)
        assert refused.value.details() == "format must be text or html, not 'markdown'"
    status, answer = translate_file(server, "page.html", html.encode())
    assert status == 200 and fetch(answer["translatedFileUrl"])[1].decode() == english
