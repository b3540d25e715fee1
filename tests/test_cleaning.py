"""Cleaning as a stream: each filter and its count, duplicates by hash, the language check."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnmt.cli import main
from rnnmt.errors import RnnmtError
from rnnmt.training import cleaning
from rnnmt.training.cleaning import CleanReport, LanguageCheck, SeenHashes, clean
from rnnmt.training.corpus import Pair


def test_each_filter_counts_what_it_drops() -> None:
    pairs = [
        Pair("Hola\u00a0  mundo", "Hello world", "1"),
        Pair("Hola mundo", "Hello   world", "2"),  # the same pair once normalised
        Pair("", "empty", "3"),
        Pair("uno dos tres cuatro", "one", "4"),
        Pair("a " * 120, "b", "5"),
        Pair("El perro come pan.", "The dog eats bread.", "6"),
    ]
    report = CleanReport()
    kept = list(clean(pairs, report, max_words=100, max_ratio=3.0, dedupe=True))
    assert [(p.src, p.tgt, p.ref) for p in kept] == [
        ("Hola mundo", "Hello world", "1"),
        ("El perro come pan.", "The dog eats bread.", "6"),
    ]
    assert (report.read, report.kept, report.empty, report.too_long, report.bad_ratio, report.duplicate) == (
        6, 2, 1, 1, 1, 1,
    )  # fmt: skip
    assert list(clean(pairs[:2], CleanReport())) == [Pair("Hola mundo", "Hello world", r) for r in "12"]


def test_duplicates_are_found_across_chunks_and_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleaning, "MERGE_EVERY", 3)  # the sorted array and the recent set both hold some
    monkeypatch.setattr(cleaning, "CHUNK_PAIRS", 4)
    pairs = [Pair(f"uno {i % 7}", f"one {i % 7}") for i in range(30)]
    report = CleanReport()
    assert [p.src for p in clean(pairs, report, dedupe=True)] == [f"uno {i}" for i in range(7)]
    assert report.duplicate == 23
    seen = SeenHashes()
    assert seen.add_new([5, 5, 2**64 - 1]) == [True, False, True]


def test_the_language_check_drops_pairs_in_other_languages() -> None:
    pairs = [
        Pair("El perro come pan en la casa grande.", "The dog eats bread in the big house."),
        Pair("Der Hund frisst Brot im großen Haus.", "The dog eats bread in the big house."),
        Pair("El perro come pan en la casa grande.", "Le chien mange du pain dans la grande maison."),
        Pair("Sí.", "Ok."),  # too short to be sure of: kept
    ]
    report = CleanReport()
    kept = list(clean(pairs, report, languages=("es", "en"), language_check=LanguageCheck(0.9)))
    assert kept == [pairs[0], pairs[3]] and report.wrong_language == 2
    with pytest.raises(RnnmtError, match="does not know xx"):
        list(clean(pairs, CleanReport(), languages=("xx", "en")))


def test_data_prepare_streams_cleans_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text(
        "Hola\u00a0  mundo\tHello world\n\tempty\nuno dos tres cuatro\tone\n" + "a " * 120 + "\tb\n"
        "Hola mundo\tHello world\n"
    )
    out_dir = tmp_path / "d"
    assert main(["data", "prepare", "--tsv", str(tsv), "--out", str(out_dir), "--max-ratio", "3"]) == 0
    out = capsys.readouterr().out
    assert (
        "5 pairs read, 1 kept; dropped 1 empty, 1 too long, 1 over the length ratio, 1 duplicates, "
        "0 in another language" in out
    )
    assert (out_dir / "train.es").read_text() == "Hola mundo\n"
    assert (out_dir / "train.ids").read_text() == "c.tsv:1\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["train.en", "train.es", "train.ids"]
    args = ["data", "prepare", "--tsv", str(tsv), "--out", str(out_dir), "--keep-duplicates", "--langid"]
    assert main(args) == 0
    assert (out_dir / "train.es").read_text() == "Hola mundo\nHola mundo\n"


def test_a_failed_prepare_leaves_the_split_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "d"
    (tmp_path / "ok.tsv").write_text("Hola\tHello\n")
    assert main(["data", "prepare", "--tsv", str(tmp_path / "ok.tsv"), "--out", str(out_dir)]) == 0
    (tmp_path / "bad.tsv").write_text("Adiós\tGoodbye\nno tab here\n")
    assert main(["data", "prepare", "--tsv", str(tmp_path / "bad.tsv"), "--out", str(out_dir)]) == 2
    assert "bad.tsv:2: expected at least 2 tab-separated columns" in capsys.readouterr().err
    assert (out_dir / "train.es").read_text() == "Hola\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["train.en", "train.es", "train.ids"]
