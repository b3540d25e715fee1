"""Text in, text out over any decoder backend: tokenize, check, search in length-sorted batches, detokenize.

The onnxruntime engine and the PyTorch reference (`rnnmt evaluate`, validation during training) both
translate through :class:`Translator`, so they tokenize, limit and batch identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.beam_search import DecoderBackend, Hypothesis, search_sorted
from rnnmt.serving.core.options import SearchOptions
from rnnmt.tokenizers.sentencepiece import EOS_ID, Tokenizer


@dataclass(frozen=True)
class TextHypothesis:
    """A detokenized translation and its length-normalised log-prob score."""

    text: str
    score: float


class Translator:
    """Translates with ``backend``. ``max_input_tokens`` (0 = no limit) bounds a source's pieces (EOS
    not counted). Calls may come from several threads: a search keeps its state locally."""

    def __init__(
        self,
        backend: DecoderBackend,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        max_input_tokens: int = 0,
        max_batch_rows: int = 256,
    ) -> None:
        if max_batch_rows < 1:
            raise RnnmtError(f"max_batch_rows must be at least 1, not {max_batch_rows}")
        self.backend = backend
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.max_input_tokens = max_input_tokens
        self.max_batch_rows = max_batch_rows

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Source ids of each text: its pieces, then EOS; a text without pieces (empty, blank) gives ``[]``."""
        return [[*ids, EOS_ID] if ids else [] for ids in self.src_tokenizer.encode(texts)]

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Target texts of output id sequences."""
        return self.tgt_tokenizer.decode(ids)

    def check_options(self, options: SearchOptions) -> None:
        """:meth:`SearchOptions.check`, and a beam that the target vocabulary can fill."""
        options.check()
        if options.beam_size >= self.tgt_tokenizer.vocab_size:
            raise RnnmtError(
                f"beam_size must be below the target vocabulary size ({self.tgt_tokenizer.vocab_size})"
            )

    def check_sources(self, sources: Sequence[Sequence[int]]) -> None:
        """Each source is ``[]`` (an empty text) or pieces + EOS, within the length limit and the vocab."""
        limit, vocab = self.max_input_tokens, self.src_tokenizer.vocab_size
        for i, ids in enumerate(sources):
            if ids and ids[-1] != EOS_ID:
                raise RnnmtError(f"texts[{i}] must end with EOS ({EOS_ID})")
            if limit and len(ids) - 1 > limit:
                raise RnnmtError(
                    f"texts[{i}] is {len(ids) - 1} tokens long; this model accepts at most {limit}"
                )
            if not all(0 <= t < vocab for t in ids):
                raise RnnmtError(f"texts[{i}] has token ids outside the source vocabulary (0 to {vocab - 1})")

    def translate_ids(
        self, sources: Sequence[Sequence[int]], options: SearchOptions
    ) -> list[list[Hypothesis]]:
        """Sources (see :meth:`tokenize`) → per source its ``n_best`` hypotheses, best first; an empty
        source gets one empty hypothesis scored 0.0 without running the model."""
        self.check_options(options)
        self.check_sources(sources)
        todo = [i for i, ids in enumerate(sources) if ids]
        found = search_sorted(self.backend, [sources[i] for i in todo], options, self.max_batch_rows)
        results = [[Hypothesis([], 0.0)] for _ in sources]
        for i, hyps in zip(todo, found, strict=True):
            results[i] = hyps
        return results

    def translate(self, texts: Sequence[str], options: SearchOptions) -> list[list[TextHypothesis]]:
        """Texts → per text its ``n_best`` translations, best first. A text over ``max_input_tokens``
        pieces is an :class:`RnnmtError` naming its index."""
        results = []
        for hyps in self.translate_ids(self.tokenize(texts), options):
            texts_out = self.detokenize([h.tokens for h in hyps])
            results.append([TextHypothesis(text, h.score) for text, h in zip(texts_out, hyps, strict=True)])
        return results
