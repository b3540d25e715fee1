"""The lexical shortlist: each sentence's set, the table built from a corpus, packages that carry one
(translations exact whatever the batching, in-process and through the server), damaged tables refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_pairs
from servers import running

from rnnmt.errors import RnnmtError
from rnnmt.serving.client import TranslatorClient
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.package import SHORTLIST_FILE, load_package
from rnnmt.serving.core.shortlist import SPECIALS, Shortlist
from rnnmt.serving.core.translator import Translator
from rnnmt.tokenizers.sentencepiece import EOS_ID
from rnnmt.training.checkpoint import load_model
from rnnmt.training.export import export_package
from rnnmt.training.shortlist import build_shortlist

SIZE = 32  # of the toy model's 60 pieces
PAIRS = [(p.src, p.tgt) for p in toy_pairs()]
SOURCES = [s for s, _ in PAIRS] + ["el gato come pan", "perro gato casa niño leche agua", "xyz qwerty"]


def hand_made(size: int = 10) -> Shortlist:
    """Source pieces 4..7, target pieces 4..19; frequency order 19, 18, ..., 4; two always in."""
    lexical = np.full((8, 3), -1, dtype=np.int64)
    lexical[4] = [5, 6, 7]
    lexical[5] = [8, 5, -1]
    lexical[6] = [9, 10, 11]
    return Shortlist(lexical, np.arange(19, 3, -1), always=2, size=size)


def test_a_set_holds_the_specials_the_frequent_then_the_lexical_candidates_by_rank() -> None:
    table = hand_made()
    assert table.candidates([4, 5, EOS_ID]).tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 18, 19]
    # Rank 0 of every piece before rank 1: 5, 8, 9, then 6, (5), 10 — cut at 10 ids.
    assert table.candidates([6, 4, 5]).tolist() == [0, 1, 2, 3, 5, 6, 8, 9, 18, 19]
    # A set depends on the distinct pieces only, not on their order or repetition.
    assert table.candidates([5, 4, 5, 4]).tolist() == table.candidates([4, 5]).tolist()
    # Without lexical candidates it fills with the most frequent pieces.
    assert table.candidates([7]).tolist() == [0, 1, 2, 3, 14, 15, 16, 17, 18, 19]


def test_a_batch_is_the_union_and_each_sentence_s_positions_in_it() -> None:
    table = hand_made()
    src = np.array([[4, 5, 3], [7, 3, 0], [6, 3, 0]])
    vocab, positions = table.batch(src, np.array([3, 2, 2]))
    assert vocab.tolist() == sorted(vocab.tolist())
    for row, n, pos in zip(src, [3, 2, 2], positions, strict=True):
        assert vocab[pos].tolist() == table.candidates(row[:n]).tolist()
        assert pos[: len(SPECIALS)].tolist() == list(range(len(SPECIALS)))  # EOS keeps its position


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": 8}, "size 8 is not between 17 and 20"),
        ({"frequent": np.arange(4, 19)}, "frequent is not a permutation"),
        ({"lexical": np.full((8, 2), 25)}, "lexical holds ids outside the target vocabulary"),
        ({"lexical": np.full((7, 2), 5)}, r"lexical has shape \(7, 2\), expected \[8, n\]"),
    ],
)
def test_a_table_that_does_not_fit_the_vocabularies_is_refused(change: dict, message: str) -> None:
    table = hand_made(18).check(8, 20, "hand-made")
    values = {"lexical": table.lexical, "frequent": table.frequent, "always": 2, "size": 18} | change
    with pytest.raises(RnnmtError, match=f"not a valid shortlist for this package: {message}"):
        Shortlist(**values).check(8, 20, "x")


def test_a_table_built_from_the_toy_corpus_covers_its_references(tiny_checkpoint: Path) -> None:
    loaded = load_model(tiny_checkpoint)
    sources = loaded.src_tokenizer.encode([s for s, _ in PAIRS])
    targets = loaded.tgt_tokenizer.encode([t for _, t in PAIRS])
    vocab = loaded.tgt_tokenizer.vocab_size
    table = build_shortlist(sources, targets, vocab, vocab, SIZE, per_piece=8, always=0)
    assert table.coverage(sources, targets) >= 0.98


def test_the_candidates_of_a_word_are_the_words_aligned_with_it() -> None:
    """Each toy word as one id, so the alignment is unambiguous (eflomal samples without a seed, and the
    tiny tokenizer's character pieces are shared by many words): "perro" gets "dog" first."""
    source_ids: dict[str, int] = {}
    target_ids: dict[str, int] = {}

    def ids(text: str, vocabulary: dict[str, int]) -> list[int]:
        return [vocabulary.setdefault(w, len(vocabulary) + 4) for w in text.lower().rstrip(".").split()]

    sources = [ids(s, source_ids) for s, _ in PAIRS]
    targets = [ids(t, target_ids) for _, t in PAIRS]
    table = build_shortlist(sources, targets, 20, 20, 18, per_piece=4, always=0)
    assert int(table.lexical[source_ids["perro"]][0]) == target_ids["dog"]


@pytest.fixture(scope="module")
def shortlisted(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, toy_data: Path
) -> Callable[[str | None], Path]:
    """quantization → a package of the tiny model with a shortlist of SIZE pieces, built once."""
    built: dict[str | None, Path] = {}

    def get(quantize: str | None) -> Path:
        if quantize not in built:
            out = tmp_path_factory.mktemp("shortlisted") / str(quantize)
            built[quantize] = export_package(
                tiny_checkpoint, out, quantize, shortlist_corpus=toy_data / "train", shortlist_size=SIZE
            )
        return built[quantize]

    return get


@pytest.mark.parametrize("quantize", [None, "int8-rows"])
def test_a_shortlisted_package_translates_the_same_whatever_the_batching(
    shortlisted: Callable[[str | None], Path], quantize: str | None
) -> None:
    package = shortlisted(quantize)
    engine = Translator.from_package(package, threads=1)
    manifest = engine.manifest
    assert manifest.format_version == 3 and manifest.shortlist is not None
    assert manifest.shortlist["size"] == SIZE and manifest.quantization == quantize
    options = SearchOptions(beam_size=5, n_best=2)
    sources = engine.tokenize(SOURCES)
    together = engine.translate_ids(sources, options)
    one_by_one = [engine.translate_ids([s], options)[0] for s in sources[::-1]][::-1]
    small_batches = Translator.from_package(package, threads=2, max_batch_rows=12).translate_ids(
        sources, options
    )
    for other in (one_by_one, small_batches):  # the same tokens; scores as exact as fp32's (source padding)
        assert [[h.tokens for h in hyps] for hyps in other] == [[h.tokens for h in hyps] for hyps in together]
        scores = [h.score for hyps in other for h in hyps]
        assert scores == pytest.approx([h.score for hyps in together for h in hyps], abs=1e-5)
    texts = engine.translate([s for s, _ in PAIRS], SearchOptions(beam_size=5))
    agree = sum(hyps[0].text == t for hyps, (_, t) in zip(texts, PAIRS, strict=True))
    assert agree >= 0.8 * len(PAIRS)


def test_through_the_server_a_sentence_gets_what_it_gets_alone(
    shortlisted: Callable[[str | None], Path], tmp_path: Path
) -> None:
    package = shortlisted(None)
    engine = Translator.from_package(package, threads=1)
    alone = {s: engine.translate([s], SearchOptions(beam_size=4, n_best=2))[0] for s in SOURCES}
    with running(package, workers=1) as server, TranslatorClient(server.target) as client:
        answer = client.translate(SOURCES, beam_size=4, n_best=2)
    for text, translation in zip(SOURCES, answer, strict=True):
        got = [(h.text, h.score) for h in translation.hypotheses]
        assert got == [(h.text, pytest.approx(h.score, abs=1e-5)) for h in alone[text]]


def test_packages_without_a_shortlist_say_none(model_dir: Path) -> None:
    manifest = json.loads((model_dir / "toy" / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["shortlist"] is None
    assert load_package(model_dir / "toy").manifest.shortlist is None


def rehash(package: Path, name: str) -> None:
    """Update the manifest's checksum of ``name`` (a deliberate edit, not damage)."""
    manifest = json.loads((package / "manifest.json").read_text())
    data = (package / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (package / "manifest.json").write_text(json.dumps(manifest))


def test_a_damaged_or_foreign_shortlist_is_refused(
    shortlisted: Callable[[str | None], Path], tmp_path: Path
) -> None:
    package = Path(shutil.copytree(shortlisted(None), tmp_path / "p"))
    table = package / SHORTLIST_FILE
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(RnnmtError, match=r"shortlist\.npz does not match its sha256"):
        Translator.from_package(package)
    rehash(package, SHORTLIST_FILE)  # a valid checksum of a broken file
    with pytest.raises(RnnmtError, match=r"shortlist\.npz is not a shortlist table"):
        Translator.from_package(package)
    hand_made().save(table)  # a valid table of other vocabularies
    rehash(package, SHORTLIST_FILE)
    with pytest.raises(RnnmtError, match=r"not a valid shortlist for this package: lexical has shape"):
        Translator.from_package(package)
