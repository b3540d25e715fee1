"""Reference corpus: the Spanish Reina-Valera 1909 aligned verse by verse with the World English Bible.

Both Bibles are read from installed SWORD modules with ``pysword``. Pairing by verse reference alone is
wrong in places, because the modules divide the text differently:

* The Spanish module (``spaRV1909eb``) stores the Hebrew/Spanish chapter divisions in KJV-numbered slots
  (Num 13 and 30, 1 Sam 24, 1 Kgs 22, 1 Chr 21, 2 Chr 33, Job 38-40, Hos 12, Jonah 2): the text is
  shifted, a slot is left empty and the overflow is merged into the chapter's last slot; elsewhere a
  clause sits at the end of one verse instead of the start of the next. Its words carry Strong's numbers
  in KJV numbering, as do those of the King James module (``engKJV2006eb``), which serves as the bridge:
  every chapter where a Spanish slot is empty or shares few Strong's numbers with the KJV verse of the
  same number is re-aligned to the KJV verses by dynamic programming over the Strong's numbers; a slot
  covering several KJV verses, and two neighbouring verses that share out a clause differently, are cut
  at the sentence boundaries the Strong's numbers point to, or else kept together as one pair.
* The WEB (``engWEB2015eb``) follows the KJV's verses except that it has Matt 23:13/14 in the other order
  and holds Rom 16:25-27 inside Rom 14:23, both mapped back; where its text is far shorter or longer than
  the KJV's it translates another source text (1 John 5:7, Matt 27:35, Acts 9:6) and is left out.

A pair joins the Spanish and English text of a run of KJV verses that both sides cover completely (one
verse, or several where the text could not be cut cleanly); anything else is dropped. ``ref`` is the
English (KJV) reference of that run, e.g. ``Jonah 2:1``, ``1 John 2:3`` or ``Romans 16:25-27``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pysword.modules import SwordModules

from rnnmt.errors import RnnmtError
from rnnmt.training.corpus import Pair, normalize

TEST_BOOKS: tuple[str, ...] = ("Ruth", "Esther", "Jonah", "Mark", "1 John")
DEV_BOOKS: tuple[str, ...] = ("Joel", "Titus", "James", "Jude")
SWORD_PACKAGES = {
    "spaRV1909eb": "sword-text-sparv",
    "engWEB2015eb": "sword-text-web",
    "engKJV2006eb": "sword-text-kjv",
}

_SPANISH, _ENGLISH, _KJV = "spaRV1909eb", "engWEB2015eb", "engKJV2006eb"
_DEFAULT_SWORD_DIR = Path("/usr/share/sword")

Key = tuple[str, int, int]
"""A verse in KJV numbering: (pysword book name, chapter, verse)."""

# --- Markup ------------------------------------------------------------------------------------------

# Anything after a chapter's end (the WEB's glossary after Rev 22:21) is no verse text.
_CHAPTER_END = re.compile(r"<chapter\b[^>]*\beID=.*", re.S)
_DROPPED_ELEMENTS = re.compile(r"<(note|speaker)\b.*?</\1>", re.S)  # footnotes, cross-references, speakers
_TITLE = re.compile(r"<title\b([^>]*)>(.*?)</title>", re.S)
_TAG = re.compile(r"<[^>]*>")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[,.;:?!])")
_INLINE_TAG = re.compile(
    r"</?(?:w|q|transChange|divineName|seg|name|foreign|catchWord|rdg|reference)\b[^>]*>"
)
_WORD_START = re.compile(r"<w\b([^>]*)>")
_STRONG = re.compile(r"strong:([GH])0*(\d+)")

# The Spanish module drops the space where a word element directly follows another one; only an enclitic
# pronoun added by the translator after a verb ("sáca" + "lo") really belongs to the word before it.
_ELEMENT_BOUNDARY = re.compile(r"(?:</(?:w|transChange)>)+(?=(?:<(?:w|transChange)\b[^>]*>)+([^<]*))")
_ENCLITICS = frozenset({"lo", "la", "le", "los", "las", "les", "me", "te", "se", "nos", "os"})
_NOT_VERBS = frozenset(
    {"qué", "cómo", "cuánto", "cuánta", "cuántos", "cuántas", "cuándo", "dónde", "quién", "cuál", "más", "aún",
     "así", "también", "después", "allí", "aquí", "acá", "allá", "él", "mí", "tú", "sí"}
)  # fmt: skip
_LAST_WORD = re.compile(r"(\w+)\W*$")
_SENTENCE_END = re.compile(r"(?:^|[.:;?!¿¡]\W*)$")

# The Spanish module capitalises each chapter's first word(s): "EN el principio", "Y ACONTECIÓ", "A TI".
_UPPER, _LOWER = "A-ZÁÉÍÓÚÑÜÂÊÎÔÛ", "a-záéíóúñüâêîôû"
_CAPS_RUN = rf"[¿¡(]?(?P<caps>(?:[{_UPPER}]\s+){{0,2}}[{_UPPER}]{{2,}}(?:\s+[{_UPPER}]{{2,}})*)\b"
_CHAPTER_CAPS = re.compile(rf"(?:^|[.:]\s+){_CAPS_RUN}")  # in a chapter's first verse, after any title
_SECTION_CAPS = re.compile(rf"^\s*{_CAPS_RUN}(?=\s+[{_LOWER}])")  # a new section inside a chapter
_WORD = re.compile(r"\w+")
_SENTENCE_BREAK = re.compile(r"[.:;?!¿¡]")

# Psalm 119's stanza letters ("ALEPH.", "BETH") are dropped from both sides.
_ACROSTIC = re.compile(
    r"^\s*(?:ALEPH|BETH|GIMEL|DALETH|HE|VAU|ZAIN|CHETH|TETH|JOD|CAPH|LAMED|MEM|NUN|SAMECH|AIN|PE|TZADDI|COPH"
    r"|RESH|SIN|TAU)\b\.?\s*"
)
# "Fué escrita de Corinto á los Romanos ...": the subscription the Spanish appends to Paul's epistles.
_SUBSCRIPTION = re.compile(r"(?<=Amén\.)\s+[^.]*\b(?:escrita|enviada)\b.*$", re.S | re.I)  # in the last verse
_EPISTLES = frozenset(
    {"Romans", "I Corinthians", "II Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
     "I Thessalonians", "II Thessalonians", "I Timothy", "II Timothy", "Titus", "Philemon", "Hebrews"}
)  # fmt: skip

# --- Alignment parameters ------------------------------------------------------------------------------

_SUSPICIOUS_DICE = 0.3  # a verse agreeing less with its KJV verse has its chapter re-aligned
_BAND = 10  # how far (in verses) the re-alignment may shift a Spanish slot from its own number
_MAX_MERGE = 12  # most KJV verses one Spanish slot may cover (Job 39:30 covers nine)
_MERGE_COST = 1.0  # per extra verse in a merged bead, in matched Strong's numbers
_SKIP_COST = 1.0  # per verse left out of the alignment
_CUT_DICE = 0.4  # each part of a cut slot must agree at least this well with its own KJV verse
_CUT_STRAYS = 1  # and hold at most this many Strong's numbers found only in the other verses
_BOUNDARY_STRAYS = 2  # this many Strong's numbers of the neighbouring verse make two verses be re-cut
_COMMON_SHARE = 1 / 30  # Strong's numbers in more KJV verses than this are no evidence of a misplaced clause
_CUT_POINT = re.compile(r"[.;:?!][»”’)]*\s+")

# --- The WEB's versification differences from the KJV ------------------------------------------------

_WEB_SWAPS = {("Matthew", 23, 13): ("Matthew", 23, 14), ("Matthew", 23, 14): ("Matthew", 23, 13)}
_WEB_DOXOLOGY_HOST: Key = ("Romans", 14, 23)  # holds Rom 16:25-27 after its last pre-verse milestone
_DOXOLOGY: tuple[Key, ...] = (("Romans", 16, 25), ("Romans", 16, 26), ("Romans", 16, 27))
_PREVERSE = '<div type="x-milestone" subType="x-preverse" sID='
_VARIANT_LOG_RATIO = 0.58  # |log(WEB length / KJV length)| beyond this (~6 sigma) marks a textual variant


@dataclass(frozen=True)
class _Text:
    """Clean text of one verse slot, with each Strong's number anchored at the offset of its word."""

    text: str
    anchors: list[tuple[int, str]]

    def strongs(self, start: int = 0, end: int | None = None) -> frozenset[str]:
        """The Strong's numbers of the words that start within ``text[start:end]``."""
        stop = len(self.text) if end is None else end
        return frozenset(number for offset, number in self.anchors if start <= offset < stop)


_Bead = tuple[_Text, tuple[Key, ...]]
"""Spanish text (with its Strong's numbers) covering a run of consecutive KJV verses."""


@dataclass(frozen=True)
class _Unit:
    """Text on one side that covers a run of consecutive KJV verses."""

    text: str
    keys: tuple[Key, ...]


def extract_bible(sword_dir: Path | None = None) -> dict[str, list[Pair]]:
    """Returns {"train": [...], "dev": [...], "test": [...]}, each a list of Pair(src=Spanish, tgt=English,
    ref="Ruth 1:1"), in canonical book/chapter/verse order.

    ``sword_dir`` is the SWORD library holding ``mods.d``; it defaults to ``$SWORD_PATH`` if set, else
    /usr/share/sword. Test books are Ruth, Esther, Jonah, Mark and 1 John, dev books Joel, Titus, James and
    Jude, everything else is train. Raises RnnmtError naming the Debian packages to install if a module
    is missing.
    """
    modules = _open_library(sword_dir)
    spanish_raw = _read_module(modules, _SPANISH)  # KJV versification: Genesis to Revelation
    books = {key[0] for key in spanish_raw}
    english_raw = _read_module(modules, _ENGLISH, books)
    kjv_raw = _read_module(modules, _KJV, books)
    keys = list(spanish_raw)

    parsed = {key: _parse_spanish(raw) for key, raw in spanish_raw.items()}
    proper_nouns = _proper_nouns(slot.text for slot in parsed.values())
    spanish = {key: _fix_spanish(key, slot, proper_nouns) for key, slot in parsed.items()}
    kjv = {key: frozenset(_strongs_of(_CHAPTER_END.sub("", kjv_raw[key]))) for key in keys}

    spanish_units = _spanish_units(keys, spanish, kjv)
    english_units = _english_units(keys, english_raw, kjv_raw)
    splits: dict[str, list[Pair]] = {"train": [], "dev": [], "test": []}
    for pair in _pairs(keys, spanish_units, english_units):
        book = pair.ref.rsplit(" ", 1)[0]
        split = "test" if book in TEST_BOOKS else "dev" if book in DEV_BOOKS else "train"
        splits[split].append(pair)
    return splits


# --- Reading the modules -----------------------------------------------------------------------------


def _open_library(sword_dir: Path | None) -> SwordModules:
    """The SWORD library at ``sword_dir``, checked to hold all three modules."""
    root = Path(sword_dir or os.environ.get("SWORD_PATH") or _DEFAULT_SWORD_DIR)
    modules = SwordModules(str(root))
    found = modules.parse_modules() if (root / "mods.d").is_dir() else {}
    missing = [
        name
        for name in SWORD_PACKAGES
        if name not in found or not (root / found[name].get("datapath", "")).is_dir()
    ]
    if missing:
        packages = " ".join(SWORD_PACKAGES[name] for name in missing)
        raise RnnmtError(
            f"SWORD module(s) {', '.join(missing)} not found in {root}: "
            f"install them with `apt-get install {packages}` (or set SWORD_PATH)"
        )
    return modules


def _read_module(modules: SwordModules, name: str, books: Iterable[str] | None = None) -> dict[Key, str]:
    """Raw OSIS text of every verse of ``books`` (default: all the module's books), in canonical order."""
    bible = modules.get_bible_from_module(name)
    # pysword decompresses a module's whole book block for every single verse; read each block once.
    bible._decompressed_text = functools.lru_cache(maxsize=None)(bible._decompressed_text)
    structure = bible.get_structure().get_books()
    wanted = None if books is None else set(books)
    verses: dict[Key, str] = {}
    for book in structure.get("ot", []) + structure.get("nt", []):
        if wanted is None or book.name in wanted:
            keys = ((book.name, c, v) for c, n in enumerate(book.chapter_lengths, 1) for v in range(1, n + 1))
            verses.update(zip(keys, bible.get_iter(books=book.name, clean=False), strict=True))
    return verses


def _ref_book(name: str) -> str:
    """English book name for references: "I John" -> "1 John", "Revelation of John" -> "Revelation"."""
    number, _, rest = name.partition(" ")
    if number in ("I", "II", "III") and rest:
        return f"{len(number)} {rest}"
    return "Revelation" if name == "Revelation of John" else name


# --- Cleaning ----------------------------------------------------------------------------------------


def _strongs_of(raw: str) -> list[str]:
    """The Strong's numbers in a piece of markup, in order, as "H430"/"G2316"."""
    return [letter + digits for letter, digits in _STRONG.findall(raw)]


def _english_text(key: Key, raw: str) -> str:
    """English verse text: notes, speaker labels, non-canonical titles and Psalm 119's letters removed."""
    raw = _DROPPED_ELEMENTS.sub(" ", _CHAPTER_END.sub("", raw))

    def title(match: re.Match[str]) -> str:
        keep = 'type="psalm"' in match.group(1) and key[:2] != ("Psalms", 119)
        return f" {match.group(2)} " if keep else " "

    text = _TAG.sub(" ", _INLINE_TAG.sub("", _TITLE.sub(title, raw)))  # other tags delimit lines, paragraphs
    text = " ".join(text.replace("¶", " ").split())  # folding first makes normalize() fast
    return normalize(_SPACE_BEFORE_PUNCTUATION.sub("", text))


def _proper_nouns(texts: Iterable[str]) -> frozenset[str]:
    """Words (folded) that the Spanish writes capitalised inside a sentence more often than not."""
    lower: Counter[str] = Counter()
    title: Counter[str] = Counter()
    for text in texts:
        for sentence in _SENTENCE_BREAK.split(text):
            for word in _WORD.findall(sentence)[1:]:
                if word.islower():
                    lower[_fold(word)] += 1
                elif word.istitle():
                    title[_fold(word)] += 1
    return frozenset(word for word, count in title.items() if count > lower[word])


@functools.cache
def _fold(word: str) -> str:
    """Lower case without diacritics: "ACHAB" and "Achâb" both give "achab"."""
    return "".join(ch for ch in unicodedata.normalize("NFD", word.lower()) if not unicodedata.combining(ch))


def _join_elements(raw: str) -> str:
    """Puts back the space the Spanish module drops between two adjacent word elements."""

    def boundary(match: re.Match[str]) -> str:
        following = match.group(1)
        if not (following[:1].isalnum() and raw[match.start() - 1].isalnum()):
            return match.group()
        if following in _ENCLITICS and _is_verb_form(raw[: match.start()]):
            return match.group()
        return match.group() + " "

    return _ELEMENT_BOUNDARY.sub(boundary, raw)


def _is_verb_form(before: str) -> bool:
    """Whether the word ending ``before`` is a verb that takes an enclitic ("sáca", "díjo", "pagar", "Dad")."""
    text = _TAG.sub("", before[-300:])
    match = _LAST_WORD.search(text)
    if not match:
        return False
    word = match.group(1)
    if word.lower() in _NOT_VERBS or (word[0].isupper() and not _SENTENCE_END.search(text[: match.start()])):
        return False  # a capitalised word inside a sentence is a name: "Josué los circuncidó"
    accented = any(ch in "áéíóú" for ch in word.lower())
    return accented or word.endswith(("r", "d", "z")) or word.lower() in ("da", "di", "vi")


def _parse_spanish(raw: str) -> _Text:
    """Spanish slot markup to text, anchoring each word's Strong's numbers at the word's offset."""
    raw = _join_elements(_CHAPTER_END.sub("", raw))
    pieces = _TAG.sub("", _WORD_START.sub("\0", raw)).split("\0")  # text before each word element
    anchors: list[tuple[int, str]] = []
    offset = len(pieces[0])
    for lemma, piece in zip(_WORD_START.findall(raw), pieces[1:], strict=True):
        anchors.extend((offset, number) for number in _strongs_of(lemma))
        offset += len(piece)
    return _Text("".join(pieces), anchors)


def _fix_spanish(key: Key, slot: _Text, proper_nouns: frozenset[str]) -> _Text:
    """A Spanish slot with first-word capitals fixed and stanza letters and subscriptions removed."""
    acrostic = _ACROSTIC.match(slot.text) if key[:2] == ("Psalms", 119) else None
    if acrostic:
        slot = _cut(slot, acrostic.end(), None)
    subscription = _SUBSCRIPTION.search(slot.text) if key[0] in _EPISTLES else None
    if subscription:
        slot = _cut(slot, 0, subscription.start())
    caps = _CHAPTER_CAPS.search(slot.text) if key[2] == 1 else _SECTION_CAPS.match(slot.text)
    if caps:
        start, end = caps.span("caps")
        fixed = _recase(caps.group("caps"), proper_nouns)
        slot = _Text(slot.text[:start] + fixed + slot.text[end:], slot.anchors)
    return slot


def _recase(words: str, proper_nouns: frozenset[str]) -> str:
    """ "Y ACONTECIÓ" -> "Y aconteció", "Y JEHOVÁ" -> "Y Jehová": a sentence's first word and proper nouns
    capitalised, the rest lower case; the same length, so anchors stay valid."""
    out = []
    for i, word in enumerate(re.split(r"(\s+)", words)):
        lower = word.lower()
        recased = lower[:1].upper() + lower[1:] if i == 0 or _fold(word) in proper_nouns else lower
        out.append(recased if len(recased) == len(word) else word)
    return "".join(out)


def _cut(slot: _Text, start: int, end: int | None) -> _Text:
    """``slot.text[start:end]`` with its anchors."""
    stop = len(slot.text) if end is None else end
    return _Text(slot.text[start:stop], [(o - start, n) for o, n in slot.anchors if start <= o < stop])


# --- Aligning the Spanish slots to KJV verses ----------------------------------------------------------


def _dice(a: frozenset[str], b: frozenset[str]) -> float:
    """Dice coefficient of two sets of Strong's numbers."""
    return 2 * len(a & b) / (len(a) + len(b)) if a or b else 0.0


def _spanish_units(keys: list[Key], spanish: dict[Key, _Text], kjv: dict[Key, frozenset[str]]) -> list[_Unit]:
    """Spanish text for runs of KJV verses: identity where the numbering agrees, re-aligned elsewhere.

    Slots found to hold several KJV verses are cut where that is clean; two neighbouring verses whose
    boundary falls elsewhere in the Spanish (a clause of one verse at the end of the other) are re-cut
    together, or paired as one.
    """
    beads: list[_Bead] = []
    for run, realign in _runs(keys, spanish, kjv):
        if not realign:
            beads.extend((spanish[key], (key,)) for key in run if spanish[key].text.strip())
            continue
        slots = [key for key in run if spanish[key].text.strip()]
        src = [spanish[key].strongs() for key in slots]
        for src_idx, tgt_idx in _align(src, [kjv[key] for key in run], [run.index(key) for key in slots]):
            if src_idx and tgt_idx:
                beads.append((_join([spanish[slots[i]] for i in src_idx]), tuple(run[j] for j in tgt_idx)))
    index = {key: i for i, key in enumerate(keys)}
    frequency = Counter(number for key in keys for number in kjv[key])
    common = frozenset(number for number, count in frequency.items() if count > _COMMON_SHARE * len(keys))
    repaired: list[_Bead] = []
    for bead in beads:
        for part in _split(*bead, kjv):
            previous = repaired[-1] if repaired else None
            if previous and _misplaced(previous, part, kjv, index):
                repaired.pop()
                repaired.extend(_recut(previous, part, kjv, index, common))
            else:
                repaired.append(part)
    return [_Unit(text.text, covered) for text, covered in repaired]


def _recut(
    first: _Bead, second: _Bead, kjv: dict[Key, frozenset[str]], index: dict[Key, int], common: frozenset[str]
) -> list[_Bead]:
    """Two neighbouring verses, one holding a clause of the other, re-cut at the best sentence boundary.

    If no clean cut exists they are paired as one, unless the module's own boundary is the best cut and
    only very common Strong's numbers ("the", "and", "said", often tagged in one module only) disagree.
    """
    joined, covered = _join([first[0], second[0]]), first[1] + second[1]
    junction = len(first[0].text) + 1
    parts = _best_cut(joined, covered, kjv, extra_bounds=[junction])
    if parts and _clean(parts, covered, kjv):
        return [(part, (key,)) for part, key in zip(parts, covered, strict=True)]
    if parts and len(parts[0].text) == junction and not _misplaced(first, second, kjv, index, common):
        return [first, second]
    return [(joined, covered)]


def _join(texts: list[_Text]) -> _Text:
    """Several slots' text as one, separated by spaces."""
    joined = texts[0]
    for text in texts[1:]:
        offset = len(joined.text) + 1
        joined = _Text(
            f"{joined.text} {text.text}", joined.anchors + [(o + offset, n) for o, n in text.anchors]
        )
    return joined


def _misplaced(
    first: _Bead,
    second: _Bead,
    kjv: dict[Key, frozenset[str]],
    index: dict[Key, int],
    ignored: frozenset[str] = frozenset(),
) -> bool:
    """Whether two consecutive one-verse beads share out a clause differently than the KJV verses do:
    a Spanish verse holds Strong's numbers (other than ``ignored``) that only the other KJV verse has."""
    (text_a, (key_a, *more_a)), (text_b, (key_b, *more_b)) = first, second
    kjv_a, kjv_b = kjv[key_a], kjv[key_b]
    if more_a or more_b or index[key_b] != index[key_a] + 1 or not (kjv_a and kjv_b):
        return False
    a, b = text_a.strongs() - ignored, text_b.strongs() - ignored
    return max(len((a & kjv_b) - kjv_a), len((b & kjv_a) - kjv_b)) >= _BOUNDARY_STRAYS


def _runs(
    keys: list[Key], spanish: dict[Key, _Text], kjv: dict[Key, frozenset[str]]
) -> Iterator[tuple[list[Key], bool]]:
    """Consecutive verses grouped into runs of whole chapters, flagged when they need re-alignment.

    A chapter is suspicious when a Spanish slot is empty or shares too few Strong's numbers with the KJV
    verse of the same number; the run to re-align spans the suspicious chapters and one neighbour on
    each side (shifts cross chapter boundaries), within the book.
    """
    chapters: dict[tuple[str, int], list[Key]] = {}
    for key in keys:
        chapters.setdefault(key[:2], []).append(key)
    suspicious = {
        key[:2]
        for key in keys
        if not spanish[key].text.strip()
        or (spanish[key].anchors and kjv[key] and _dice(spanish[key].strongs(), kjv[key]) < _SUSPICIOUS_DICE)
    }
    flagged = {(book, chapter + delta) for book, chapter in suspicious for delta in (-1, 0, 1)}
    run: list[Key] = []
    previous: tuple[str, int] | None = None  # the chapter before; set whenever ``run`` holds verses
    for chapter, verses in chapters.items():
        if run and not (
            chapter in flagged and previous in flagged and previous is not None and chapter[0] == previous[0]
        ):
            yield run, previous in flagged
            run = []
        run.extend(verses)
        previous = chapter
    if run:
        yield run, previous in flagged


def _align(
    src: list[frozenset[str]], tgt: list[frozenset[str]], positions: list[int]
) -> list[tuple[list[int], list[int]]]:
    """Monotone alignment of Spanish slots to KJV verses maximising shared Strong's numbers.

    Beads are 1-1, 1-n (a slot holding several verses), 2-1, 1-0 and 0-1, the last four penalised;
    ``positions`` (each slot's own verse number in ``tgt``) bounds how far the alignment may stray.
    Returns the beads as (slot indices, verse indices), in order.
    """
    n, m = len(src), len(tgt)
    # spans[j][b - 1]: the Strong's numbers of verses j-b .. j-1
    spans: list[list[frozenset[str]]] = [[]]
    for j in range(1, m + 1):
        spans.append([frozenset().union(*tgt[j - b : j]) for b in range(1, min(j, _MAX_MERGE) + 1)])
    best: dict[tuple[int, int], tuple[float, tuple[int, int]]] = {(0, 0): (0.0, (0, 0))}
    for i in range(n + 1):
        anchor = positions[i] if i < n else m
        for j in range(max(0, anchor - _BAND), min(m, anchor + _BAND) + 1):
            options = [
                (best[prev][0] - _SKIP_COST, prev) for prev in ((i - 1, j), (i, j - 1)) if prev in best
            ]
            if i >= 2 and j >= 1 and (i - 2, j - 1) in best:
                gain = len((src[i - 2] | src[i - 1]) & tgt[j - 1]) - _MERGE_COST
                options.append((best[(i - 2, j - 1)][0] + gain, (i - 2, j - 1)))
            if i >= 1:
                for b, covered in enumerate(spans[j], 1):
                    if (i - 1, j - b) in best:
                        gain = len(src[i - 1] & covered) - _MERGE_COST * (b - 1)
                        options.append((best[(i - 1, j - b)][0] + gain, (i - 1, j - b)))
            if options:
                best[(i, j)] = max(options)
    beads = []
    cell = (n, m)
    while cell != (0, 0):
        prev = best[cell][1]
        beads.append((list(range(prev[0], cell[0])), list(range(prev[1], cell[1]))))
        cell = prev
    return beads[::-1]


def _split(text: _Text, covered: tuple[Key, ...], kjv: dict[Key, frozenset[str]]) -> list[_Bead]:
    """Cuts Spanish text that holds several KJV verses at sentence boundaries, one part per verse, if
    that is clean; otherwise the text stays whole, paired with all the verses it covers."""
    parts = _best_cut(text, covered, kjv) if len(covered) > 1 else None
    if parts and _clean(parts, covered, kjv):
        return [(part, (key,)) for part, key in zip(parts, covered, strict=True)]
    return [(text, covered)]


def _best_cut(
    text: _Text, covered: tuple[Key, ...], kjv: dict[Key, frozenset[str]], extra_bounds: Iterable[int] = ()
) -> list[_Text] | None:
    """Text cut into one part per verse at sentence boundaries (and ``extra_bounds``), maximising the
    Strong's numbers each part shares with its verse; None if there are too few boundaries."""
    k = len(covered)
    inner = {m.end() for m in _CUT_POINT.finditer(text.text)} | set(extra_bounds)
    bounds = [0, *sorted(b for b in inner if 0 < b < len(text.text.rstrip())), len(text.text)]
    # best[t][stop]: (score, start) of the best way to place parts 0..t-1, part t-1 being bounds[start:stop]
    best: list[dict[int, tuple[int, int]]] = [{0: (0, -1)}] + [{} for _ in range(k)]
    for t in range(k):
        for start, (score, _) in best[t].items():
            for stop in range(start + 1, len(bounds)) if t < k - 1 else [len(bounds) - 1]:
                total = score + len(text.strongs(bounds[start], bounds[stop]) & kjv[covered[t]])
                if stop not in best[t + 1] or total > best[t + 1][stop][0]:
                    best[t + 1][stop] = (total, start)
    if len(bounds) - 1 not in best[k]:
        return None
    cuts = [len(bounds) - 1]
    for t in range(k, 0, -1):
        cuts.append(best[t][cuts[-1]][1])
    return [_cut(text, bounds[a], bounds[b]) for a, b in itertools.pairwise(cuts[::-1])]


def _clean(parts: list[_Text], covered: tuple[Key, ...], kjv: dict[Key, frozenset[str]]) -> bool:
    """Whether every part agrees well with its own verse and holds (nearly) no words of the other verses,
    i.e. the verse boundary is not inside a sentence (such as a list of names)."""
    for part, key in zip(parts, covered, strict=True):
        strongs, own = part.strongs(), kjv[key]
        others = frozenset().union(*(kjv[other] for other in covered if other != key))
        if _dice(strongs, own) < _CUT_DICE or len((strongs & others) - own) > _CUT_STRAYS:
            return False
    return True


# --- The English side --------------------------------------------------------------------------------


def _english_units(keys: list[Key], english_raw: dict[Key, str], kjv_raw: dict[Key, str]) -> list[_Unit]:
    """WEB text per KJV verse, with the WEB's own versification differences mapped back.

    Where the WEB's text is much shorter or longer than the KJV's for the same verses, it translates a
    different source text (1 John 5:7, Matt 27:35, Acts 9:6 ...) than the Reina-Valera and the KJV do;
    such text is left out, so that no pair is made of it.
    """
    host = english_raw[_WEB_DOXOLOGY_HOST]
    moved = host.rfind(_PREVERSE)  # > 0: the WEB holds Rom 16:25-27 at the end of Rom 14:23
    units = []
    for key in keys:
        raw = english_raw[_WEB_SWAPS.get(key, key)]
        if moved > 0 and key == _WEB_DOXOLOGY_HOST:
            raw = raw[:moved]
        elif moved > 0 and key in _DOXOLOGY:
            if key == _DOXOLOGY[0]:
                units.append(_Unit(_english_text(key, host[moved:]), _DOXOLOGY))
            continue
        units.append(_Unit(_english_text(key, raw), (key,)))
    return [unit if _same_source(unit, kjv_raw) else _Unit("", unit.keys) for unit in units]


def _same_source(unit: _Unit, kjv_raw: dict[Key, str]) -> bool:
    """Whether WEB text is about as long as the KJV text of the same verses (or empty)."""
    kjv_length = sum(len(_english_text(key, kjv_raw[key])) for key in unit.keys)
    return not unit.text or abs(math.log(len(unit.text) / max(kjv_length, 1))) <= _VARIANT_LOG_RATIO


# --- Pairing -----------------------------------------------------------------------------------------


def _pairs(keys: list[Key], spanish: list[_Unit], english: list[_Unit]) -> Iterator[Pair]:
    """Joins both sides' units into the smallest runs of verses that both cover completely."""
    index = {key: i for i, key in enumerate(keys)}
    spans = sorted(  # (first verse, last verse, side, text)
        (index[unit.keys[0]], index[unit.keys[-1]], side, unit.text)
        for side, units in (("es", spanish), ("en", english))
        for unit in units
        if unit.text.strip()
    )
    group: list[tuple[int, int, str, str]] = []
    end = -1
    for span in spans:
        if group and span[0] > end:
            yield from _pair(keys, group)
            group = []
        group.append(span)
        end = max(end, span[1])
    if group:
        yield from _pair(keys, group)


def _pair(keys: list[Key], group: list[tuple[int, int, str, str]]) -> Iterator[Pair]:
    """One pair from overlapping spans, if both sides cover every verse of the group."""
    first, last = min(s[0] for s in group), max(s[1] for s in group)
    texts = {}
    for side in ("es", "en"):
        covered = sorted((s[0], s[1]) for s in group if s[2] == side)
        if not covered or covered[0][0] != first or covered[-1][1] != last:
            return
        if any(b[0] != a[1] + 1 for a, b in itertools.pairwise(covered)):
            return
        texts[side] = normalize(" ".join(s[3] for s in group if s[2] == side))
    if texts["es"] and texts["en"]:
        yield Pair(texts["es"], texts["en"], _ref(keys[first], keys[last]))


def _ref(first: Key, last: Key) -> str:
    """ "Ruth 1:1", "Jonah 2:9-10", "Job 39:30-40:5"."""
    ref = f"{_ref_book(first[0])} {first[1]}:{first[2]}"
    if last == first:
        return ref
    return f"{ref}-{last[2]}" if last[1] == first[1] else f"{ref}-{last[1]}:{last[2]}"
