"""Inline tags placed by the decoder's attention: packages of format 3 output it, older ones are
upgraded in place with their translations unchanged, and HTML through the server keeps its inline
tags around the words translated from theirs, whatever else is in the request."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from servers import running
from test_html import markup
from test_http import call
from test_shortlist import rehash

from rnnmt.cli import main
from rnnmt.errors import RnnmtError
from rnnmt.serving.core.package import ATTENTION_OUTPUT, DECODER_FILE, MANIFEST_FILE, load_package
from rnnmt.serving.core.translator import Translator

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "bible-es-en"
TAGS = re.compile(r"<[^>]*>")


def format_1(package: Path, out: Path) -> Path:
    """A copy of ``package`` as rnnmt wrote packages before format 3: its decoder without the attention
    output."""
    shutil.copytree(package, out)
    decoder = onnx.load(out / DECODER_FILE)
    graph = decoder.graph
    [exposed] = [node for node in graph.node if ATTENTION_OUTPUT in node.output]
    graph.node.remove(exposed)
    graph.output.remove(next(o for o in graph.output if o.name == ATTENTION_OUTPUT))
    onnx.save(decoder, out / DECODER_FILE)
    rehash(out, DECODER_FILE)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    del manifest["shortlist"]
    (out / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 1}))
    return out


def test_an_upgraded_package_translates_the_same_and_aligns(model_dir: Path, tmp_path: Path) -> None:
    old = format_1(model_dir / "toy", tmp_path / "toy")
    before = Translator.from_package(old)
    assert before.attention is None
    with pytest.raises(RnnmtError, match="cannot align words"):
        before.align("El perro come pan.", "The dog eats bread.")
    assert main(["upgrade", str(old)]) == 0
    assert load_package(old).manifest.format_version == 3
    after = Translator.from_package(old)
    sentences = ["El perro come pan.", "Un gato bebe agua.", "El niño ve pan."]
    options = replace(before.default_options, n_best=2)
    assert after.translate(sentences, options) == before.translate(sentences, options)
    alignment = after.align(sentences[0], "The dog eats bread.")
    assert len(alignment.links) == 5 and all(0 <= link < 5 for link in alignment.links)
    assert main(["upgrade", str(old)]) == 0  # already format 3: nothing to do


def test_a_signed_package_is_not_upgraded(model_dir: Path, tmp_path: Path) -> None:
    package = format_1(model_dir / "toy", tmp_path / "signed")
    assert main(["keys", "new", str(tmp_path / "key")]) == 0
    assert main(["sign", str(package), "--key", str(tmp_path / "key")]) == 0
    assert main(["upgrade", str(package)]) == 2
    assert load_package(package).manifest.format_version == 1


def test_the_shipped_model_puts_tags_around_their_words(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / SHIPPED.name)
    source = "En el principio creó Dios los cielos y la tierra."
    alignment = Translator.from_package(SHIPPED).align(
        source, "In the beginning God created the heavens and the earth."
    )
    target = "In the beginning God created the heavens and the earth."
    linked = {
        target[a:b]: source[slice(*alignment.source_words[link])]
        for (a, b), link in zip(alignment.target_words, alignment.links, strict=True)
    }
    assert linked["heavens"] == "cielos" and linked["beginning"] == "principio"
    with running(tmp_path, workers=1, http_port=0) as s:
        page = "<p>En el principio creó Dios los <b>cielos</b> y la <i>tierra</i>.</p>"
        query = {"q": page, "source": "es", "target": "en", "format": "html"}
        status, answer = call(s.server.http_port, "/translate", query)
        assert (status, answer) == (
            200,
            {
                "translatedText": "<p>In the beginning God has believed the <b>heavens</b> and <i>the earth</i>.</p>"
            },
        )


def test_inline_tags_come_back_around_their_words_whatever_the_request(model_dir: Path) -> None:
    sentence = "<p>El <b>perro</b> come <i>pan</i>.</p>"
    others = ["<p>Un gato bebe agua.</p>", "<p>El niño <em>ve</em> pan.</p>"]
    with running(model_dir, workers=1, http_port=0) as s:
        port = s.server.http_port

        def translated(texts: list[str]) -> list[str]:
            status, answer = call(port, "/v1/translate", {"texts": texts, "format": "html"})
            assert status == 200, answer
            return [t["hypotheses"][0]["text"] for t in answer["translations"]]

        [alone] = translated([sentence])
        assert translated([*others, sentence])[-1] == alone
        _, plain = call(port, "/v1/translate", {"texts": ["El perro come pan."]})
        assert (
            TAGS.sub("", alone) == "<p>{}</p>".format(plain["translations"][0]["hypotheses"][0]["text"])[3:-4]
        )
        assert markup(alone) == markup(sentence)
        assert "<b></b>" not in alone and "<i></i>" not in alone  # each around some words
