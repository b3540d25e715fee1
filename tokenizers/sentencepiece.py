"""SentencePiece tokenizers: training on a corpus, and the encode/decode every component shares.

Training, evaluation and serving all tokenize through :class:`Tokenizer`, so a sentence becomes the same
ids everywhere. Special ids are fixed for every model rnnmt trains: pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import io
import itertools
import math
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from rnnmt.errors import RnnmtError

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
MODEL_TYPES = ("unigram", "bpe")
SPECIAL_PIECES = 4  # pad, unk, bos, eos

# SentencePiece's message when the vocabulary cannot hold the corpus's characters and the special pieces:
# "Vocabulary size is smaller than required_chars. 30 vs 32. ..." (asked vs needed).
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. *\d+ vs (\d+)")


def reservoir_sample(items: Iterable[str], size: int, rng: random.Random) -> list[str]:
    """A uniform random sample of ``size`` of ``items`` (all of them, in order, when there are fewer),
    in one pass and ``size`` items of memory: Li's algorithm L, which draws a random number per item kept
    rather than per item read."""
    stream = iter(items)
    sample = list(itertools.islice(stream, size))
    if len(sample) < size:
        return sample

    def uniform() -> float:  # in (0, 1): a logarithm's argument
        return max(rng.random(), 5e-324)

    weight = math.exp(math.log(uniform()) / size)
    while True:
        skip = math.floor(math.log(uniform()) / math.log1p(-weight))
        taken = list(itertools.islice(stream, skip, skip + 1))
        if not taken:
            return sample
        sample[rng.randrange(size)] = taken[0]
        weight *= math.exp(math.log(uniform()) / size)


class Tokenizer:
    """One SentencePiece model: text ⇄ ids (without bos/eos; callers add what they need)."""

    def __init__(self, model_proto: bytes, name: str = "sentencepiece") -> None:
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load_from_serialized_proto(model_proto)
        except (RuntimeError, OSError) as exc:
            raise RnnmtError(f"{name} is not a SentencePiece model: {exc}") from exc
        specials = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if specials != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise RnnmtError(f"{name} was not trained with rnnmt's special ids (pad 0, unk 1, bos 2, eos 3)")

    @classmethod
    def load(cls, model_file: Path | str) -> Tokenizer:
        path = Path(model_file)
        if not path.is_file():
            raise RnnmtError(f"tokenizer model not found: {path}")
        return cls(path.read_bytes(), str(path))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no bos/eos."""
        return self._sp.encode(list(texts), out_type=int)

    def pieces(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids of ``text``'s pieces (as :meth:`encode`) and where each piece is in it: its
        characters' span (the whitespace it stands for included)."""
        proto = self._sp.encode(text, return_type="proto")  # spans in UTF-8 bytes
        char_at = [i for i, char in enumerate(text) for _ in range(len(char.encode()))] + [len(text)]
        spans = [(char_at[piece.begin], char_at[piece.end]) for piece in proto.pieces]
        return [piece.id for piece in proto.pieces], spans

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Texts of id sequences; special ids are skipped."""
        return self._sp.decode([[i for i in seq if i > EOS_ID] for seq in ids])


def train_sentencepiece(
    texts: Iterable[str],
    model_file: Path,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    max_sentences: int = 300_000,
    seed: int = 1,
) -> Tokenizer:
    """Train a SentencePiece model on ``texts`` and write it to ``model_file`` (``*.model``).

    ``texts`` is read through once (a stream is fine) and SentencePiece learns from a uniform random
    sample of at most ``max_sentences`` of them (:func:`reservoir_sample`, seeded by ``seed``: the same
    texts and seed give the same model in any process), so its time and memory stay bounded whatever the
    corpus's size. (SentencePiece's own sampling, ``input_sentence_size``, ignores its seed.)

    A vocab size larger than the corpus supports is lowered to what it supports (tiny corpora in tests).
    One too small to hold the corpus's characters and the special pieces is an :class:`RnnmtError` that
    names ``tokenizer.vocab_size`` and the smallest size that works; any other failure of SentencePiece
    is an :class:`RnnmtError` too.
    """
    if model_type not in MODEL_TYPES:
        raise RnnmtError(f"tokenizer model_type must be one of {MODEL_TYPES}, not {model_type!r}")
    model_file.parent.mkdir(parents=True, exist_ok=True)
    sample = reservoir_sample(texts, max_sentences, random.Random(seed))
    buffer = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=buffer,
            # Under SPECIAL_PIECES SentencePiece fails before counting the characters, so it would not
            # say what size works; with SPECIAL_PIECES it fails after (any text needs more), and says.
            vocab_size=max(vocab_size, SPECIAL_PIECES),
            model_type=model_type,
            character_coverage=character_coverage,
            input_sentence_size=0,  # the whole sample
            hard_vocab_limit=False,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            normalization_rule_name="nmt_nfkc",
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as exc:
        needed = _TOO_SMALL.search(str(exc))
        if needed:
            raise _too_small(vocab_size, int(needed[1]), character_coverage, model_file) from None
        raise RnnmtError(f"SentencePiece could not train {model_file}: {exc}") from None
    tokenizer = Tokenizer(buffer.getvalue(), str(model_file))
    if vocab_size < SPECIAL_PIECES:  # trained with SPECIAL_PIECES: the size that works
        raise _too_small(vocab_size, tokenizer.vocab_size, character_coverage, model_file)
    model_file.write_bytes(buffer.getvalue())
    return tokenizer


def _too_small(vocab_size: int, needed: int, character_coverage: float, model_file: Path) -> RnnmtError:
    return RnnmtError(
        f"tokenizer.vocab_size {vocab_size} is too small: the characters of the text {model_file.name} is "
        f"trained on (at character_coverage {character_coverage}) and the {SPECIAL_PIECES} special pieces "
        f"alone need {needed} pieces; set tokenizer.vocab_size to {needed} or more (thousands for a real corpus)"
    )
