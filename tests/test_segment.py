"""Sentence splitting of paragraphs and documents, and putting the translations back in place."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import running

from rnnmt.cli import main
from rnnmt.serving.core.segment import split_sentences
from rnnmt.v1 import translator_pb2 as pb
from rnnmt.v1 import translator_pb2_grpc as pb_grpc

PARAGRAPH = "  Y dijo Dios: Sea la luz. Y fué la luz.\n\nY vió Dios que la luz era buena.  \n"


def test_a_paragraph_becomes_its_sentences_and_comes_back_with_its_layout() -> None:
    segmented = split_sentences(PARAGRAPH, "es")
    assert segmented.sentences == [
        "Y dijo Dios: Sea la luz.",
        "Y fué la luz.",
        "Y vió Dios que la luz era buena.",
    ]
    assert segmented.join(segmented.sentences) == PARAGRAPH
    assert segmented.join(["A.", "B.", "C."]) == "  A. B.\n\nC.  \n"


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "Sin punto final", "¿Qué? ¡Nada! Bien.", "a\r\nb\rc\n"])
def test_any_text_comes_back_unchanged(text: str) -> None:
    segmented = split_sentences(text, "es")
    assert segmented.join(segmented.sentences) == text
    assert all(s and s == s.strip() for s in segmented.sentences)
    assert len(segmented.gaps) == len(segmented.sentences) + 1


def test_a_translation_count_that_does_not_fit_is_an_error() -> None:
    with pytest.raises(ValueError, match="1 translations for 3 sentences"):
        split_sentences(PARAGRAPH, "es").join(["x"])


@given(st.text(alphabet=st.sampled_from(list("ab .?!¿¡\n\r\t:;,Y")), max_size=60))
def test_every_text_of_words_punctuation_and_breaks_comes_back_unchanged(text: str) -> None:
    segmented = split_sentences(text, "es")
    assert segmented.join(segmented.sentences) == text
    assert all(s and s == s.strip() for s in segmented.sentences)


# -- through the server ---------------------------------------------------------------------------------


def test_the_server_translates_a_paragraph_sentence_by_sentence_and_keeps_its_layout(model_dir: Path) -> None:
    paragraph = "El perro come pan. Un gato bebe agua.\n\n  El niño ve pan.\n"
    long_text = " ".join(
        ["El perro come pan."] * 50
    )  # over the 250-piece limit as one text, not per sentence
    with running(model_dir, workers=1) as server, grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.TranslatorStub(channel)
        response = stub.Translate(
            pb.TranslateRequest(texts=[paragraph, "El perro come pan.", "  "], split_sentences=True),
            timeout=30,
        )
        texts = [t.hypotheses[0].text for t in response.translations]
        assert texts == [
            "The dog eats bread. A cat drinks water.\n\n  The boy sees bread.\n",
            "The dog eats bread.",
            "  ",
        ]
        alone = stub.Translate(pb.TranslateRequest(texts=["El perro come pan."]), timeout=30)
        assert response.translations[1].hypotheses[0].score == alone.translations[0].hypotheses[0].score
        with pytest.raises(grpc.RpcError) as refused:
            stub.Translate(pb.TranslateRequest(texts=[long_text]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        split = stub.Translate(pb.TranslateRequest(texts=[long_text], split_sentences=True), timeout=30)
        assert split.translations[0].hypotheses[0].text == " ".join(["The dog eats bread."] * 50)
        with pytest.raises(grpc.RpcError) as nbest:
            options = pb.DecodingOptions(n_best=2, beam_size=2)
            stub.Translate(
                pb.TranslateRequest(texts=[paragraph], split_sentences=True, options=options), timeout=30
            )
        assert nbest.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "n_best must be 1 with split_sentences" in nbest.value.details()


def test_a_batch_job_translates_a_document_of_paragraphs_and_keeps_its_layout(
    model_dir: Path, tmp_path: Path
) -> None:
    document = tmp_path / "doc.es"
    document.write_text("El perro come pan.  Un gato bebe agua.\n\n  El niño ve pan.\n", encoding="utf-8")
    out = tmp_path / "doc.en"
    assert (
        main(
            [
                "batch",
                str(document),
                "--out",
                str(out),
                "--model",
                str(model_dir / "toy"),
                "--split-sentences",
            ]
        )
        == 0
    )
    assert (
        out.read_text(encoding="utf-8")
        == "The dog eats bread.  A cat drinks water.\n\n  The boy sees bread.\n"
    )
    assert (
        main(
            [
                "batch",
                str(document),
                "--out",
                str(tmp_path / "x"),
                "--model",
                str(model_dir),
                "--split-sentences",
                "--n-best",
                "2",
                "--beam-size",
                "2",
            ]
        )
        == 2
    )
