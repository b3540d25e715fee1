"""The corpus store against the in-memory reference, its cache, batches planned from its lengths, and
sharding across ranks."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from conftest import toy_pairs

from rnnmt.errors import RnnmtError
from rnnmt.tokenizers.sentencepiece import EOS_ID, Tokenizer, train_sentencepiece
from rnnmt.training.batching import make_batches
from rnnmt.training.corpus import Pair, read_lines_of, write_split
from rnnmt.training.store import CorpusStore, open_store

MAX_TOKENS = 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Tokenizer]:
    """Toy pairs plus an empty side and a pair over :data:`MAX_TOKENS` pieces, and a tokenizer."""
    folder = tmp_path_factory.mktemp("store_corpus")
    pairs = [*toy_pairs(), Pair("", "empty"), Pair("el perro " * 10, "the dog " * 10)]
    write_split(folder / "train", pairs, "es", "en")
    src, tgt = folder / "train.es", folder / "train.en"
    tokenizer = train_sentencepiece(read_lines_of([src, tgt]), folder / "joint.model", 60)
    return src, tgt, tokenizer


def reference(src: Path, tgt: Path, tokenizer: Tokenizer) -> list[tuple[list[int], list[int]]]:
    """What the trainer held in memory before the store: every pair tokenized, the same filter."""
    sources = tokenizer.encode(src.read_text().splitlines())
    targets = tokenizer.encode(tgt.read_text().splitlines())
    return [
        ([*s, EOS_ID], t)
        for s, t in zip(sources, targets, strict=True)
        if s and t and max(len(s), len(t)) < MAX_TOKENS
    ]


def opened(cache: Path, corpus: tuple[Path, Path, Tokenizer], max_tokens: int = MAX_TOKENS) -> CorpusStore:
    src, tgt, tokenizer = corpus
    return open_store(cache, src, tgt, tokenizer, tokenizer, max_tokens)


def test_the_store_holds_the_reference_examples(corpus: tuple[Path, Path, Tokenizer], tmp_path: Path) -> None:
    store = opened(tmp_path, corpus)
    expected = reference(*corpus)
    assert len(store) == len(expected) == len(toy_pairs())
    assert store.examples(range(len(store))) == expected
    assert store.examples([3, 0]) == [expected[3], expected[0]]
    assert store.manifest.read == len(toy_pairs()) + 2 and store.manifest.skipped == 2
    assert store.src_lengths.tolist() == [len(s) - 1 for s, _ in expected]


def test_an_unchanged_store_is_reused_and_any_changed_input_builds_another(
    corpus: tuple[Path, Path, Tokenizer], tmp_path: Path
) -> None:
    src, tgt, tokenizer = corpus
    first = opened(tmp_path, corpus)
    marker = first.folder / "marker"
    marker.touch()
    assert opened(tmp_path, corpus).folder == first.folder and marker.exists()
    assert opened(tmp_path, corpus, max_tokens=MAX_TOKENS + 1).folder != first.folder
    other_tokenizer = train_sentencepiece(read_lines_of([src, tgt]), tmp_path / "other.model", 40, "bpe")
    assert open_store(tmp_path, src, tgt, other_tokenizer, other_tokenizer, MAX_TOKENS).folder != first.folder
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in (src, tgt):
        shutil.copy(path, changed / path.name)
    with (changed / src.name).open("a") as f:
        f.write("El gato ve pan.\n")
    with (changed / tgt.name).open("a") as f:
        f.write("The cat sees bread.\n")
    grown = open_store(tmp_path, changed / src.name, changed / tgt.name, tokenizer, tokenizer, MAX_TOKENS)
    assert grown.folder != first.folder and len(grown) == len(first) + 1


def test_a_truncated_or_half_built_store_is_rebuilt(
    corpus: tuple[Path, Path, Tokenizer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = opened(tmp_path, corpus)
    ids = store.folder / "tgt.ids"
    ids.write_bytes(ids.read_bytes()[:-6])
    partial = store.folder.with_name(store.folder.name + ".partial")
    partial.mkdir()
    (partial / "src.ids").write_bytes(b"left by a killed build")
    with caplog.at_level(logging.WARNING, logger="rnnmt.training.store"):
        rebuilt = opened(tmp_path, corpus)
    assert "incomplete; building it again" in caplog.text
    assert rebuilt.examples(range(len(rebuilt))) == reference(*corpus)
    assert not partial.exists()
    (rebuilt.folder / "manifest.json").unlink()  # killed just before the manifest was written
    assert opened(tmp_path, corpus).examples(range(len(rebuilt))) == reference(*corpus)


def test_misaligned_or_foreign_bytes_are_clear_errors(
    corpus: tuple[Path, Path, Tokenizer], tmp_path: Path
) -> None:
    _, _, tokenizer = corpus
    (tmp_path / "a.es").write_text("uno\ndos\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(RnnmtError, match=r"a\.es has 2 lines but .*a\.en has 1"):
        open_store(tmp_path / "cache", tmp_path / "a.es", tmp_path / "a.en", tokenizer, tokenizer, 10)
    (tmp_path / "b.es").write_bytes(b"uno\n\xff\xfe\n")
    (tmp_path / "b.en").write_text("one\ntwo\n")
    with pytest.raises(RnnmtError, match=r"b\.es:2 is not UTF-8 text"):
        open_store(tmp_path / "cache", tmp_path / "b.es", tmp_path / "b.en", tokenizer, tokenizer, 10)
    assert not any((tmp_path / "cache").iterdir())  # a failed build leaves nothing


def test_batches_are_a_function_of_seed_and_epoch_and_hold_each_example_once() -> None:
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 60, 5_000).astype(np.int32), rng.integers(1, 60, 5_000).astype(np.int32)
    first = make_batches(src, tgt, 2_000, seed=1, epoch=0)
    again = make_batches(src, tgt, 2_000, seed=1, epoch=0)
    assert [b.tolist() for b in (first[i] for i in range(len(first)))] == [
        b.tolist() for b in (again[i] for i in range(len(again)))
    ]
    assert not np.array_equal(make_batches(src, tgt, 2_000, seed=1, epoch=1).indices, first.indices)
    assert not np.array_equal(make_batches(src, tgt, 2_000, seed=2, epoch=0).indices, first.indices)
    assert sorted(first.indices.tolist()) == list(range(5_000))
    for b in range(len(first)):
        rows = first[b]
        padded = len(rows) * int((src[rows] + tgt[rows] + 2).max())
        assert padded <= 2_000 or len(rows) == 1


def test_ranks_share_an_epoch_evenly_and_cover_every_example_once() -> None:
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(1, 40, 3_001).astype(np.int32), rng.integers(1, 40, 3_001).astype(np.int32)
    for world in (2, 3):
        batches = make_batches(src, tgt, 1_500, seed=1, epoch=0, world=world)
        shards = [batches.shard(rank, world) for rank in range(world)]
        assert len({len(shard) for shard in shards}) == 1
        covered = np.concatenate([batches[b] for shard in shards for b in shard])
        assert sorted(covered.tolist()) == list(range(3_001))
    one = make_batches(src[:1], tgt[:1], 1_500, seed=1, epoch=0, world=2)
    assert one.shard(0, 2) == one.shard(1, 2) == [0]  # fewer examples than ranks: batch 0 again


def test_the_tokenizer_learns_from_a_seeded_sample_of_the_lines(tmp_path: Path) -> None:
    # 4,000 lines, each of its own character: the pieces show which lines the sample held.
    lines = [chr(0x4E00 + i) * 3 for i in range(4000)]

    def learned(seed: int, name: str) -> set[str]:
        model = tmp_path / f"{name}.model"
        train_sentencepiece(iter(lines), model, 800, max_sentences=200, seed=seed)
        processor = spm.SentencePieceProcessor(model_file=str(model))
        pieces = {processor.id_to_piece(i) for i in range(processor.get_piece_size())}
        return {c for piece in pieces for c in piece if "\u4e00" <= c <= "\u9fff"}

    first = learned(1, "a")
    assert 0 < len(first) <= 200  # from the sample alone
    assert (
        learned(1, "b") == first
        and (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    )
    assert learned(2, "c") != first
