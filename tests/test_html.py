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

from rnnmt.serving.core.alignment import Alignment, words
from rnnmt.serving.core.segment import split_sentences
from rnnmt.serving.documents.html import html_segments, rebuild_text, render, tokens_of
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


def in_order(source: str, target: str) -> Alignment:
    """The k-th word of ``target`` translated from the k-th of ``source`` (the last, past its end)."""
    source_words, target_words = words(source), words(target)
    return Alignment(
        source_words, target_words, [min(k, len(source_words) - 1) for k in range(len(target_words))]
    )


def upper(text: str, inline: bool = True) -> str:
    """The document "translated" to upper case, word for word."""
    segments = html_segments(text, inline)
    rendered = []
    for segment in segments:
        cut = split_sentences(segment.text, "es")
        translations = [sentence.upper() for sentence in cut.sentences]
        alignments = [in_order(s, t) for s, t in zip(cut.sentences, translations, strict=True)]
        rendered.append(render(segment, cut, translations, alignments))
    return rebuild_text(text, segments, rendered)


def test_only_the_text_between_tags_is_translated() -> None:
    texts = [segment.text for segment in html_segments(PAGE)]
    assert texts == ["El perro", "El perro come\xa0pan & agua.", "\n  Un gato\n"]
    pieces = [segment.text for segment in html_segments(PAGE, inline=False)]
    assert pieces == ["El perro", "El ", "perro", " come\xa0pan & agua.", "\n  Un gato\n"]
    assert (
        upper(PAGE)
        == upper(PAGE, inline=False)
        == (
            PAGE.replace("<title>El perro", "<title>EL PERRO")
            .replace("El <b>perro</b> come&nbsp;pan &amp; agua.", "EL <b>PERRO</b> COME\xa0PAN &amp; AGUA.")
            .replace("\n  Un gato\n", "\n  UN GATO\n")
        )
    )


def test_elements_inside_kept_ones_stay_kept() -> None:
    fragment = '<div translate="no"><p>Hola <b>mundo</b></p></div><p>Adiós</p><code><b>x</b> y</code>'
    assert [segment.text for segment in html_segments(fragment)] == ["Adiós"]


def placed(fragment: str, translation: str, links: list[int]) -> str:
    """``fragment`` (one sentence) translated as ``translation``, its k-th word from word ``links[k]``."""
    [segment] = html_segments(fragment)
    cut = split_sentences(segment.text, "es")
    [sentence] = cut.sentences
    alignment = Alignment(words(sentence), words(translation), links)
    return rebuild_text(fragment, [segment], [render(segment, cut, [translation], [alignment])])


def test_inline_tags_go_around_the_words_translated_from_theirs() -> None:
    # la casa roja → the red house: the tag follows "roja" to "red"
    assert (
        placed("<p>la casa <b>roja</b>.</p>", "the red house.", [0, 2, 1, 3])
        == "<p>the <b>red</b> house.</p>"
    )
    # nested elements stay nested; a link element spanning two words takes both
    assert (
        placed(
            '<p>Ve a <a href="/x">la <em>casa</em> grande</a> hoy.</p>',
            "Go to the big house today.",
            [0, 1, 2, 4, 3, 5, 6],
        )
        == '<p>Go to <a href="/x">the big <em>house</em></a> today.</p>'
    )
    # a whole sentence in a tag keeps it whole, whatever the links
    assert placed("<p><i>uno dos</i>.</p>", "two one.", [0, 0, 2]) == "<p><i>two one</i>.</p>"


def test_inline_tags_keep_their_order_when_the_words_swap() -> None:
    """Two elements whose words come back in the other order: the second follows the first (empty)
    rather than cross it, so the markup sequence is the source's."""
    out = placed("<p><b>uno</b> y <i>dos</i></p>", "two and one", [2, 1, 0])
    assert out == "<p>two and <b>one</b><i></i></p>"
    assert markup(out) == markup("<p><b>uno</b> y <i>dos</i></p>")


def test_unpaired_inline_tags_fall_back_to_the_text_between_tags() -> None:
    assert [s.text for s in html_segments("<p>Hola <b>mundo</p> y </b>adiós</p>")] == [
        "Hola ",
        "mundo",
        " y ",
        "adiós",
    ]


PIECES = [
    "<p>", "</p>", '<b class="x">', "</b>", "<br/>", "<br>", "<!-- c -->", "&amp;", "&nbsp;", "&#233;",
    "perro", " ", "\n", "come pan.", "<script>", "</script>", "<pre>", "</pre>", "<a href='?a=1&b=2'>", "</a>",
    "<i>", "</i>", "<span translate=no>", "</span>", "Sí. ", "¿Qué?",
]  # fmt: skip


@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=30).map("".join))
def test_any_html_comes_back_with_the_same_markup(text: str) -> None:
    assert markup(upper(text)) == markup(text)
    assert markup(upper(text, inline=False)) == markup(text)


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
