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
from rnnmt.serving.core.translator import TextHypothesis, join_translations
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


def test_the_kth_translation_of_a_text_joins_the_kth_of_each_sentence() -> None:
    """A sentence with fewer hypotheses (an empty one has a single) gives its last to the others."""
    segmented = [split_sentences("Uno. Dos.\n\nTres.", "es"), split_sentences("", "es")]
    results = [
        [TextHypothesis("One.", -1.0), TextHypothesis("A one.", -2.0), TextHypothesis("1.", -3.0)],
        [TextHypothesis("Two.", -0.5)],
        [TextHypothesis("Three.", -0.25), TextHypothesis("3.", -4.0), TextHypothesis("Tree.", -5.0)],
    ]
    assert join_translations(segmented, results) == [
        [
            TextHypothesis("One. Two.\n\nThree.", -1.75 / 3),
            TextHypothesis("A one. Two.\n\n3.", -6.5 / 3),
            TextHypothesis("1. Two.\n\nTree.", -8.5 / 3),
        ],
        [TextHypothesis("", 0.0)],
    ]


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
        # n-best with splitting: the k-th joins each sentence's k-th; the first is the translation itself
        request = pb.TranslateRequest(texts=[paragraph], split_sentences=True)
        one = stub.Translate(request, timeout=30).translations[0].hypotheses
        request.options.CopyFrom(pb.DecodingOptions(n_best=3))
        three = stub.Translate(request, timeout=30).translations[0].hypotheses
        assert len(three) == 3 and three[0].text == one[0].text and three[0].score == one[0].score
        assert all(h.text.count("\n") == 3 and h.text.startswith("The ") for h in three)
        assert len({h.text for h in three}) > 1


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
    nbest = tmp_path / "nbest.en"
    args = ["batch", str(document), "--out", str(nbest), "--model", str(model_dir), "--split-sentences"]
    assert main([*args, "--n-best", "2"]) == 0
    lines = nbest.read_text(encoding="utf-8").splitlines()  # text, score, text, score per line
    assert [line.split("\t")[0] for line in lines] == out.read_text(encoding="utf-8").splitlines()
    assert all(len(line.split("\t")) == 4 for line in lines if line)
