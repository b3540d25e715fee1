"""The onnxruntime engine: agreement with the PyTorch reference, batching, edge cases, int8, no torch."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from conftest import VARIANTS, run_without_torch, toy_pairs

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.beam_search import Hypothesis, beam_search
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.translator import TextHypothesis, Translator
from rnnmt.tokenizers.sentencepiece import UNK_ID
from rnnmt.training.checkpoint import load_model
from rnnmt.training.export import export_package
from rnnmt.training.torch_backend import TorchBackend

MAX_INPUT_TOKENS = 40
MAIN = "general-feeding-2layers"

PAIRS = [(p.src, p.tgt) for p in toy_pairs()]
SOURCES = [s for s, _ in PAIRS] + [
    "el gato come pan",
    "El gato come pan y leche.",
    "Un niño ve la casa.",
    "gato gato gato",
    "el el el el",
    "Pan.",
    "perro gato casa niño leche agua",
    "xyz qwerty",
    "El perro 42 come.",
    "¿dónde está la biblioteca?",
]
SENTENCE, TRANSLATION = PAIRS[7]


@pytest.fixture(scope="module")
def packages(
    tmp_path_factory: pytest.TempPathFactory, variant_checkpoint: Callable[[str], Path]
) -> Callable[[str, str | None], tuple[Path, Path]]:
    """variant, quantization → (checkpoint, package), each built once per module."""
    built: dict[tuple[str, str | None], tuple[Path, Path]] = {}

    def get(variant: str, quantize: str | None = None) -> tuple[Path, Path]:
        if (variant, None) not in built:
            checkpoint = variant_checkpoint(variant)
            package = export_package(
                checkpoint, tmp_path_factory.mktemp(variant) / "fp32", None, 17, MAX_INPUT_TOKENS
            )
            built[variant, None] = checkpoint, package
        if (variant, quantize) not in built:
            checkpoint, _ = built[variant, None]
            package = export_package(
                checkpoint, tmp_path_factory.mktemp(variant) / str(quantize), quantize, 17, MAX_INPUT_TOKENS
            )
            built[variant, quantize] = checkpoint, package
        return built[variant, quantize]

    return get


@pytest.fixture(scope="module")
def engine(packages: Callable[[str, str | None], tuple[Path, Path]]) -> Translator:
    return Translator.from_package(packages(MAIN, None)[1])


@pytest.fixture(scope="module")
def one_piece_word(engine: Translator) -> str:
    """A corpus word (or the start of one) that the source tokenizer keeps as a single piece."""
    words = sorted(
        {w[:n] for s, _ in PAIRS for w in s.split() for n in range(1, len(w) + 1)}, key=len, reverse=True
    )
    return next(w for w in words if len(engine.tokenize([w])[0]) == 2)


def assert_same(expected: list[list[Hypothesis]], actual: list[list[Hypothesis]], tol: float = 1e-4) -> None:
    assert [[h.tokens for h in hyps] for hyps in actual] == [[h.tokens for h in hyps] for hyps in expected]
    for e_hyps, a_hyps in zip(expected, actual, strict=True):
        assert [h.score for h in a_hyps] == pytest.approx([h.score for h in e_hyps], abs=tol)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(
    "options",
    [
        SearchOptions(beam_size=1),
        SearchOptions(beam_size=5),
        SearchOptions(beam_size=4, n_best=2, min_output_tokens=3),
    ],
    ids=["greedy", "beam5", "beam4-nbest2-min3"],
)
def test_onnx_engine_matches_the_pytorch_reference(
    packages: Callable[[str, str | None], tuple[Path, Path]], variant: str, options: SearchOptions
) -> None:
    checkpoint, package = packages(variant, None)
    engine = Translator.from_package(package)
    sources = engine.tokenize(SOURCES)
    expected = beam_search(TorchBackend(load_model(checkpoint).model), sources, options)
    actual = engine.translate_ids(sources, options)
    assert_same(expected, actual)
    assert all(len(h.tokens) >= options.min_output_tokens for hyps in actual for h in hyps)


def test_the_model_translates_its_training_data(engine: Translator) -> None:
    results = engine.translate([s for s, _ in PAIRS], SearchOptions(beam_size=5))
    assert [hyps[0].text for hyps in results] == [t for _, t in PAIRS]


def test_results_do_not_depend_on_batching(
    packages: Callable[[str, str | None], tuple[Path, Path]], engine: Translator
) -> None:
    options = SearchOptions(beam_size=5, n_best=2)
    sources = engine.tokenize(SOURCES)
    together = engine.translate_ids(sources, options)
    one_per_batch = Translator.from_package(
        packages(MAIN, None)[1], threads=1, max_batch_rows=3
    ).translate_ids(sources, options)
    assert_same(together, one_per_batch, tol=1e-5)
    small_batches = Translator.from_package(packages(MAIN, None)[1], max_batch_rows=12).translate_ids(
        sources, options
    )
    assert_same(together, small_batches, tol=1e-5)
    one_by_one = [engine.translate_ids([s], options)[0] for s in sources[::-1]][::-1]
    assert_same(together, one_by_one, tol=1e-5)


def test_empty_and_whitespace_texts_are_not_translated(engine: Translator) -> None:
    results = engine.translate(["", "  ", "\t\n", SENTENCE], SearchOptions(beam_size=3, n_best=2))
    assert results[:3] == [[TextHypothesis("", 0.0)]] * 3
    assert results[3][0].text == TRANSLATION
    assert engine.translate(["", " "], SearchOptions()) == [[TextHypothesis("", 0.0)]] * 2


def test_unknown_characters_and_a_single_token(
    packages: Callable[[str, str | None], tuple[Path, Path]], engine: Translator, one_piece_word: str
) -> None:
    """A source of unknown characters and a one-piece source are translated as the PyTorch reference
    translates them, texts and scores."""
    texts = ["你好世界", one_piece_word]
    sources = engine.tokenize(texts)
    assert UNK_ID in sources[0] and len(sources[1]) == 2
    options = SearchOptions(beam_size=5)
    expected = beam_search(TorchBackend(load_model(packages(MAIN, None)[0]).model), sources, options)
    assert_same(expected, engine.translate_ids(sources, options))
    results = engine.translate(texts, options)
    assert [[h.text for h in hyps] for hyps in results] == [
        engine.detokenize([hyps[0].tokens]) for hyps in expected
    ]
    assert [hyps[0].score for hyps in results] == pytest.approx(
        [hyps[0].score for hyps in expected], abs=1e-4
    )


def test_longest_allowed_input_and_one_over(engine: Translator, one_piece_word: str) -> None:
    longest = " ".join([one_piece_word] * MAX_INPUT_TOKENS)
    assert len(engine.tokenize([longest])[0]) == MAX_INPUT_TOKENS + 1
    (hyps,) = engine.translate([longest], SearchOptions(beam_size=2, max_output_tokens=20))
    assert len(hyps) == 1
    with pytest.raises(
        RnnmtError, match=rf"texts\[1\] is {MAX_INPUT_TOKENS + 1} tokens long; .* at most {MAX_INPUT_TOKENS}"
    ):
        engine.translate([SENTENCE, f"{longest} {one_piece_word}"], SearchOptions())


def test_n_best_equal_to_beam(engine: Translator) -> None:
    results = engine.translate(["el perro come pan", SENTENCE], SearchOptions(beam_size=4, n_best=4))
    for hyps in results:
        assert len(hyps) == 4
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    ids = engine.translate_ids(engine.tokenize(["el perro come pan"]), SearchOptions(beam_size=4, n_best=4))
    assert len({tuple(h.tokens) for h in ids[0]}) == 4


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"beam_size": 0}, "beam_size"),
        ({"beam_size": 17}, "beam_size"),
        ({"n_best": 6}, "n_best"),
        ({"n_best": 0}, "n_best"),
        ({"length_penalty": float("nan")}, "length_penalty"),
        ({"length_penalty": -1.0}, "length_penalty"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_length_ratio": 0.0}, "max_length_ratio"),
        ({"min_output_tokens": 256}, "min_output_tokens"),
    ],
)
def test_invalid_options_name_the_field(engine: Translator, change: dict[str, float], field: str) -> None:
    options = SearchOptions(**change)  # type: ignore[arg-type]
    with pytest.raises(RnnmtError, match=f"^{field} must be"):
        options.check()
    with pytest.raises(RnnmtError, match=f"^{field} must be"):
        engine.translate([SENTENCE], options)


def test_invalid_source_ids_are_refused(engine: Translator) -> None:
    with pytest.raises(RnnmtError, match=r"texts\[0\] must end with EOS"):
        engine.translate_ids([[5, 6]], SearchOptions())
    with pytest.raises(RnnmtError, match=r"texts\[1\] has token ids outside"):
        engine.translate_ids([[5, 3], [10_000, 3]], SearchOptions())


def test_int8_package_loads_and_translates(packages: Callable[[str, str | None], tuple[Path, Path]]) -> None:
    engine = Translator.from_package(packages(MAIN, "int8")[1])
    assert engine.manifest.quantization == "int8"
    assert engine.manifest.verification["quantized"] == "measured, not enforced"
    results = engine.translate([s for s, _ in PAIRS], SearchOptions(beam_size=5))
    agree = sum(hyps[0].text == t for hyps, (_, t) in zip(results, PAIRS, strict=True))
    assert agree >= 0.8 * len(PAIRS)


def test_int8_weights_package_is_smaller_and_independent_of_batching(
    packages: Callable[[str, str | None], tuple[Path, Path]], engine: Translator
) -> None:
    package = packages(MAIN, "int8-weights")[1]
    fp32 = engine.package.root
    for graph in ("encoder.onnx", "decoder.onnx"):
        assert (package / graph).stat().st_size < 0.5 * (fp32 / graph).stat().st_size
    quantized = Translator.from_package(package)
    assert quantized.manifest.quantization == "int8-weights"
    assert quantized.manifest.verification["quantized_decoder_max_abs_diff"] > 0
    options = SearchOptions(beam_size=5, n_best=2)
    sources = quantized.tokenize(SOURCES)
    together = quantized.translate_ids(sources, options)
    one_by_one = [quantized.translate_ids([s], options)[0] for s in sources]
    assert_same(together, one_by_one, tol=1e-5)
    texts = quantized.translate([s for s, _ in PAIRS], SearchOptions(beam_size=5))
    agree = sum(hyps[0].text == t for hyps, (_, t) in zip(texts, PAIRS, strict=True))
    assert agree >= 0.8 * len(PAIRS)


def test_serving_does_not_import_torch(engine: Translator) -> None:
    out = run_without_torch(
        "from pathlib import Path\n"
        "import rnnmt.serving.core.onnx_backend, rnnmt.serving.core.package\n"
        "from rnnmt.evaluation import load_translator\n"
        "from rnnmt.serving.core.options import SearchOptions\n"
        "print(load_translator(Path(sys.argv[1])).translate([sys.argv[2]], SearchOptions())[0][0].text)\n",
        str(engine.package.root),
        SENTENCE,
    )
    assert out.strip() == TRANSLATION


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"beam_size": 0}, "decoding.beam_size must be 1 to 16, not 0"),
        ({"n_best": 6}, "decoding.n_best must be 1 to beam_size"),
        ({"beam": 5}, "invalid decoding defaults: .*'beam'"),
    ],
)
def test_invalid_decoding_defaults_name_the_manifest_and_the_field(
    model_dir: Path, tmp_path: Path, change: dict[str, int], message: str
) -> None:
    # manifest.json holds the checksums of the other files, not its own: an edited manifest still loads
    package = Path(shutil.copytree(model_dir / "toy", tmp_path / "toy"))
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["decoding"] |= change
    (package / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RnnmtError, match=f"^{re.escape(str(package / 'manifest.json'))}: {message}"):
        Translator.from_package(package, threads=1)


@pytest.mark.parametrize(("variant", "quantize"), [(MAIN, None), (MAIN, "int8-rows"), ("bahdanau", None)])
def test_a_sentence_scores_the_same_whatever_the_batch_pads_its_source_to(
    packages: Callable[[str, str | None], tuple[Path, Path]], variant: str, quantize: str | None
) -> None:
    # Beside a longer sentence, a source's memory is padded to the longer length S. onnxruntime chose
    # the kernel of the attention scores. MatMul (transposed keys) by S: scores moved in the last bit
    # once the source was padded at all (AMD EPYC, AVX-512), so the keys are exported transposed.
    engine = Translator.from_package(packages(variant, quantize)[1])
    options = SearchOptions(beam_size=3, n_best=3)
    source = engine.tokenize(["el gato come pan"])[0]
    alone = engine.translate_ids([source], options)[0]
    for extra in range(1, MAX_INPUT_TOKENS - len(source) + 1):
        longer = [UNK_ID] * (len(source) + extra - 1) + source[-1:]
        assert engine.translate_ids([source, longer], options)[0] == alone, f"padded by {extra}"


def test_int8_rows_package_translates_and_is_independent_of_batching(
    packages: Callable[[str, str | None], tuple[Path, Path]],
) -> None:
    package = packages(MAIN, "int8-rows")[1]
    ops = {node.op_type for node in onnx.load(str(package / "decoder.onnx")).graph.node}
    assert "LSTM" not in ops and "MatMulInteger" in ops
    quantized = Translator.from_package(package)
    assert quantized.manifest.quantization == "int8-rows"
    options = SearchOptions(beam_size=5, n_best=2)
    sources = quantized.tokenize(SOURCES)
    together = quantized.translate_ids(sources, options)
    one_by_one = [quantized.translate_ids([s], options)[0] for s in sources[::-1]][::-1]
    assert together == one_by_one  # tokens and scores, exactly
    results = quantized.translate([s for s, _ in PAIRS], SearchOptions(beam_size=5))
    agree = sum(hyps[0].text == t for hyps, (_, t) in zip(results, PAIRS, strict=True))
    assert agree >= 0.8 * len(PAIRS)
