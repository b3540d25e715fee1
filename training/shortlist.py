"""Building a package's lexical shortlist (:mod:`rnnmt.serving.core.shortlist`) from its training corpus.

The corpus is tokenized with the model's own tokenizers and word-aligned piece to piece with eflomal
(both directions, links of both kept); a source piece's candidates are the target pieces it is linked to
most often (``per_piece``, best first, ties to the lower id). Target pieces are ranked by their corpus
frequency for the ``always`` part and the fill.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.shortlist import SPECIALS, Shortlist
from rnnmt.training.checkpoint import LoadedModel
from rnnmt.training.corpus import read_split

SHORTLIST_SIZE = 1024
PER_PIECE = 64
ALWAYS_SHARE = 8
"""By default the most frequent pieces fill an eighth of each set (128 of 1,024)."""


def _read_links(path: Path) -> list[list[tuple[int, int]]]:
    return [
        [(int(i), int(j)) for i, _, j in (link.partition("-") for link in line.split())]
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def align(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> np.ndarray:
    """Word-align id sequences with eflomal → every link in both directions as (source id, target id)
    rows [M,2] int64."""
    try:
        import eflomal  # only needed at export
    except ImportError:
        raise RnnmtError("export --shortlist needs eflomal: pip install 'rnnmt[shortlist]'") from None

    if len(sources) != len(targets) or not all(sources) or not all(targets):
        raise RnnmtError("the shortlist needs aligned, non-empty source and target sentences")
    with tempfile.TemporaryDirectory() as tmp:
        fwd, rev = Path(tmp) / "fwd", Path(tmp) / "rev"
        eflomal.Aligner().align(
            [" ".join(map(str, s)) for s in sources],
            [" ".join(map(str, t)) for t in targets],
            links_filename_fwd=str(fwd),
            links_filename_rev=str(rev),
        )
        links = [
            (source[i], target[j])
            for path in (fwd, rev)
            for source, target, pairs in zip(sources, targets, _read_links(path), strict=True)
            for i, j in pairs
        ]
    return np.array(links, dtype=np.int64).reshape(-1, 2)


def build_shortlist(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    source_vocab_size: int,
    target_vocab_size: int,
    size: int,
    per_piece: int = PER_PIECE,
    always: int | None = None,
) -> Shortlist:
    """The shortlist of a corpus of id sequences (no BOS/EOS): ``size`` pieces per sentence, ``always``
    of them (default: an eighth) the most frequent."""
    links = align(sources, targets)
    pairs, counts = np.unique(links, axis=0, return_counts=True)
    # Per source piece: most links first, then the lower target id.
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    starts = np.searchsorted(pairs[:, 0], pairs[:, 0], side="left")
    rank = np.arange(len(pairs)) - starts
    kept = pairs[rank < per_piece]
    lexical = np.full((source_vocab_size, per_piece), -1, dtype=np.int64)
    lexical[kept[:, 0], rank[rank < per_piece]] = kept[:, 1]
    lexical[np.isin(lexical, SPECIALS)] = -1  # the specials are in every set anyway

    frequency = np.bincount(
        np.concatenate([np.asarray(t, np.int64) for t in targets]), minlength=target_vocab_size
    )
    ids = np.arange(len(SPECIALS), target_vocab_size)
    frequent = ids[np.lexsort((ids, -frequency[len(SPECIALS) :]))]
    always = size // ALWAYS_SHARE if always is None else always
    return Shortlist(lexical, frequent, min(always, len(frequent)), size).check(
        source_vocab_size, target_vocab_size, "the built shortlist"
    )


def corpus_shortlist(loaded: LoadedModel, corpus: Path, size: int) -> tuple[Shortlist, int]:
    """The shortlist of the parallel corpus at prefix ``corpus`` (``<prefix>.<src_lang>`` and
    ``<prefix>.<tgt_lang>``, as `rnnmt data` writes them), tokenized with the model's tokenizers.
    Returns it and the number of sentence pairs it was built from."""
    data = loaded.config.data
    pairs = [p for p in read_split(corpus, data.src_lang, data.tgt_lang) if p.src.strip() and p.tgt.strip()]
    if not pairs:
        raise RnnmtError(f"no sentence pairs found at {corpus}.{data.src_lang} / {corpus}.{data.tgt_lang}")
    sources = loaded.src_tokenizer.encode([p.src for p in pairs])
    targets = loaded.tgt_tokenizer.encode([p.tgt for p in pairs])
    kept = [(s, t) for s, t in zip(sources, targets, strict=True) if s and t]
    shortlist = build_shortlist(
        [s for s, _ in kept],
        [t for _, t in kept],
        loaded.src_tokenizer.vocab_size,
        loaded.tgt_tokenizer.vocab_size,
        size,
    )
    return shortlist, len(kept)
