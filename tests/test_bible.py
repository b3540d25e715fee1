"""The reference Bible corpus, built from the installed SWORD modules (no mocks): splits, alignment, cleaning."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rnnmt.errors import RnnmtError
from rnnmt.training.bible import DEV_BOOKS, SWORD_PACKAGES, TEST_BOOKS, extract_bible
from rnnmt.training.corpus import Pair

SWORD_DIR = Path("/usr/share/sword")
ALL_PACKAGES = "apt-get install sword-text-sparv sword-text-web sword-text-kjv"
PAUL_AND_HEBREWS = (
    "Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
    "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews",
)  # fmt: skip


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Pair]]:
    """The whole corpus, built once for this module; skipped when the SWORD modules are not installed."""
    try:
        return extract_bible()
    except RnnmtError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def by_ref(splits: dict[str, list[Pair]]) -> dict[str, Pair]:
    """Every pair of every split, by reference."""
    return {pair.ref: pair for pairs in splits.values() for pair in pairs}


def book_of(ref: str) -> str:
    """ "1 John 2:3" -> "1 John"."""
    return ref.rsplit(" ", 1)[0]


def assert_pairs(by_ref: dict[str, Pair], expected: dict[str, tuple[str, str]]) -> None:
    """Each reference exists, its Spanish contains the first snippet and its English the second."""
    for ref, (spanish, english) in expected.items():
        assert ref in by_ref, ref
        assert spanish in by_ref[ref].src, (ref, by_ref[ref].src)
        assert english in by_ref[ref].tgt, (ref, by_ref[ref].tgt)


def test_split_sizes_and_books(splits: dict[str, list[Pair]]) -> None:
    assert 29_000 <= len(splits["train"]) <= 30_500
    assert 230 <= len(splits["dev"]) <= 270
    assert 1_040 <= len(splits["test"]) <= 1_120
    books = {name: {book_of(pair.ref) for pair in pairs} for name, pairs in splits.items()}
    assert books["test"] == set(TEST_BOOKS)
    assert books["dev"] == set(DEV_BOOKS)
    assert not books["train"] & (books["test"] | books["dev"])
    assert len(books["train"]) == 66 - len(TEST_BOOKS) - len(DEV_BOOKS)


def test_refs_unique_in_canonical_order(splits: dict[str, list[Pair]]) -> None:
    train = [pair.ref for pair in splits["train"]]
    refs = [pair.ref for pairs in splits.values() for pair in pairs]
    assert len(refs) == len(set(refs))
    assert train[0] == "Genesis 1:1" and train[-1] == "Revelation 22:21"
    assert [pair.ref for pair in splits["test"]][:2] == ["Ruth 1:1", "Ruth 1:2"]
    mark = [pair.ref for pair in splits["test"] if book_of(pair.ref) == "Mark"]
    assert mark.index("Mark 9:44") < mark.index("Mark 9:45") < mark.index("Mark 10:1")


def test_jonah_2_realigned(by_ref: dict[str, Pair]) -> None:
    # The Spanish module holds Jonah 1:17 in its slot 2:1 and Jonah 2:9-10 together in slot 2:10.
    assert_pairs(
        by_ref,
        {
            "Jonah 1:17": ("gran pez que tragase á Jonás", "huge fish to swallow up Jonah"),
            "Jonah 2:1": ("Y oró Jonás", "Jonah prayed"),
            "Jonah 2:2": ("Clamé de mi tribulación", "I called because of my affliction"),
            "Jonah 2:3": ("Echásteme en el profundo", "you threw me into the depths"),
            "Jonah 2:6": ("Descendí á las raíces de los montes", "bottoms of the mountains"),
            "Jonah 2:8": ("vanidades ilusorias", "regard vain idols"),
            "Jonah 2:9": ("La salvación pertenece á Jehová", "Salvation belongs to Yahweh"),
            "Jonah 2:10": ("vomitó á Jonás en tierra", "vomited out Jonah"),
        },
    )
    assert "mandó Jehová al pez" not in by_ref["Jonah 2:9"].src
    assert [ref for ref in by_ref if ref.startswith("Jonah 2:")] == [f"Jonah 2:{v}" for v in range(1, 11)]


def test_shifted_chapters_realigned(by_ref: dict[str, Pair]) -> None:
    assert_pairs(
        by_ref,
        {
            "Numbers 12:16": ("movió el pueblo de Haseroth", "traveled from Hazeroth"),
            "Numbers 13:16": ("Oseas hijo de Nun", "Hoshea the son of Nun"),
            "Numbers 13:33": ("hijos de Anac", "the sons of Anak"),
            "Job 38:39": ("la presa para el león", "hunt the prey for the lioness"),
            "Job 39:30": ("Sus pollos chupan la sangre", "young ones also suck up blood"),
            "Job 40:4": ("yo soy vil", "I am of small account"),
            "Job 40:5": ("Una vez hablé", "I have spoken once"),
            "Job 40:6": ("desde la oscuridad", "out of the whirlwind"),
            "Job 41:1": ("leviathán", "Leviathan"),
            "Hosea 11:12": ("Cercóme Ephraim con mentira", "Ephraim surrounds me with falsehood"),
            "Hosea 12:1": ("Ephraim se apacienta del viento", "Ephraim feeds on wind"),
            "Hosea 12:14": ("Enojado ha Ephraim", "Ephraim has bitterly provoked anger"),
            "2 Corinthians 13:13": ("Todos los santos os saludan", "All the saints greet you"),
            "Acts 19:41": ("despidió la concurrencia", "dismissed the assembly"),
        },
    )
    assert "despidió" not in by_ref["Acts 19:40"].src


def test_web_versification_mapped_back(by_ref: dict[str, Pair]) -> None:
    assert_pairs(
        by_ref,
        {
            "Matthew 23:13": ("cerráis el reino de los cielos", "shut up the Kingdom of Heaven"),
            "Matthew 23:14": ("casas de las viudas", "devour widows’ houses"),
            "Romans 14:23": ("es pecado", "whatever is not of faith is sin."),
            "Romans 16:25-27": ("Y al que puede confirmaros", "Now to him who is able to establish you"),
            "Revelation 22:21": ("La gracia de nuestro Señor Jesucristo", "be with all the saints. Amen."),
        },
    )
    assert by_ref["Romans 14:23"].tgt.endswith("is sin.")
    assert by_ref["Revelation 22:21"].tgt.endswith("Amen.")
    assert "1 John 5:7" not in by_ref  # the WEB lacks the Spanish (and KJV) "three in heaven"


def test_no_markup_notes_or_subscriptions(splits: dict[str, list[Pair]], by_ref: dict[str, Pair]) -> None:
    pairs = [pair for split in splits.values() for pair in split]
    assert all(pair.src and pair.tgt for pair in pairs)
    assert not [pair.ref for pair in pairs if re.search("[<>]", pair.src + pair.tgt)]
    assert not [pair.ref for pair in pairs if "Glossary" in pair.tgt or "TR adds" in pair.tgt]
    assert not [pair.ref for pair in pairs if "Fué escrita" in pair.src]
    assert "Sheol is the place of the dead" not in by_ref["Jonah 2:2"].tgt  # a footnote
    assert by_ref["Song of Solomon 1:2"].tgt.startswith("Let him kiss me")  # no "Beloved" speaker label
    for book in PAUL_AND_HEBREWS:
        last = [pair for pair in pairs if book_of(pair.ref) == book][-1]
        assert last.src.endswith("Amén."), last


def test_spanish_text_repaired(splits: dict[str, list[Pair]], by_ref: dict[str, Pair]) -> None:
    assert by_ref["Genesis 1:1"].src.startswith("En el principio crió Dios")
    assert by_ref["Genesis 7:1"].src.startswith("Y Jehová dijo á Noé")
    assert by_ref["Luke 17:1"].src.startswith("Y á sus discípulos dice")
    assert "Salmo de David. A ti, oh Jehová" in by_ref["Psalms 25:1"].src
    shouting = re.compile(r"(?:^|[.:]\s)\W*(?:\w\s)?[A-ZÁÉÍÓÚÑ]{2,}\s+[a-záéíóúñ]")
    assert not [pair.ref for pair in splits["train"] + splits["test"] if shouting.search(pair.src)]
    # Spaces the module drops between word elements are back; enclitic pronouns stay attached.
    assert "hay allí también bdelio" in by_ref["Genesis 2:12"].src
    assert "Estas son las medidas de que Salomón" in by_ref["2 Chronicles 3:3"].src
    assert "sácalo de este lugar" in by_ref["Genesis 19:12"].src
    # Psalm titles on both sides, Psalm 119's stanza letters on neither.
    assert by_ref["Psalms 3:1"].src.startswith("Salmo de David, cuando huía")
    assert by_ref["Psalms 3:1"].tgt.startswith("A Psalm by David, when he fled")
    assert by_ref["Psalms 119:1"].src.startswith("Bienaventurados")
    assert by_ref["Psalms 119:1"].tgt.startswith("Blessed")


def test_missing_modules_name_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RnnmtError, match=re.escape(ALL_PACKAGES)):
        extract_bible(tmp_path)
    monkeypatch.setenv("SWORD_PATH", str(tmp_path))
    with pytest.raises(RnnmtError, match=re.escape(ALL_PACKAGES)):
        extract_bible()


def test_only_missing_packages_named(tmp_path: Path) -> None:
    conf = SWORD_DIR / "mods.d" / "engKJV2006eb.conf"
    if not conf.exists():
        pytest.skip(f"the KJV module is not installed: apt-get install {SWORD_PACKAGES['engKJV2006eb']}")
    (tmp_path / "mods.d").mkdir()
    shutil.copy(conf, tmp_path / "mods.d")
    (tmp_path / "modules").symlink_to(SWORD_DIR / "modules")
    with pytest.raises(RnnmtError) as error:
        extract_bible(tmp_path)
    assert "apt-get install sword-text-sparv sword-text-web" in str(error.value)
    assert "sword-text-kjv" not in str(error.value)
