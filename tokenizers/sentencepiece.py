"""SentencePiece tokenizers: training on a corpus, and the encode/decode every component shares.

Training, evaluation and serving all tokenize through :class:`Tokenizer`, so a sentence becomes the same
ids everywhere. Special ids are fixed for every model rnnmt trains: pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from rnnmt.errors import RnnmtError

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
MODEL_TYPES = ("unigram", "bpe")


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

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Texts of id sequences; special ids are skipped."""
        return self._sp.decode([[i for i in seq if i > EOS_ID] for seq in ids])

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)


def train_sentencepiece(
    texts: Iterable[str],
    model_file: Path,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    seed_sentences: int = 2_000_000,
) -> Tokenizer:
    """Train a SentencePiece model on ``texts`` and write it to ``model_file`` (``*.model``).

    A vocab size larger than the corpus supports is lowered to what it supports (tiny corpora in tests).
    """
    if model_type not in MODEL_TYPES:
        raise RnnmtError(f"tokenizer model_type must be one of {MODEL_TYPES}, not {model_type!r}")
    model_file.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        input_sentence_size=seed_sentences,
        shuffle_input_sentence=True,
        hard_vocab_limit=False,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        normalization_rule_name="nmt_nfkc",
        num_threads=2,
        minloglevel=2,
    )
    model_file.write_bytes(buffer.getvalue())
    return Tokenizer(buffer.getvalue(), str(model_file))
