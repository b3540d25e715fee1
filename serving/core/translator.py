"""Text in, text out over any decoder backend: tokenize, check, search in length-sorted batches, detokenize.

The onnxruntime engine and the PyTorch reference (`rnnmt evaluate`, validation during training) both
translate through :class:`Translator`, so they tokenize, limit and batch identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.beam_search import DecoderBackend, Hypothesis, SearchOptions, search_sorted
from rnnmt.tokenizers.sentencepiece import EOS_ID, Tokenizer

MAX_BEAM_SIZE = 16
MAX_OUTPUT_TOKENS = 1024
MAX_LENGTH_PENALTY = 10.0
MAX_LENGTH_RATIO = 10.0


@dataclass(frozen=True)
class TextHypothesis:
    """A detokenized translation and its length-normalised log-prob score."""

    text: str
    score: float


def validate_options(options: SearchOptions) -> SearchOptions:
    """Return ``options`` if every field is in range, else raise an :class:`RnnmtError` naming the field."""

    def check(name: str, ok: bool, rule: str) -> None:
        if not ok:
            raise RnnmtError(f"{name} must be {rule}, not {getattr(options, name)!r}")

    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def is_number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    o = options
    check("beam_size", is_int(o.beam_size) and 1 <= o.beam_size <= MAX_BEAM_SIZE, f"1 to {MAX_BEAM_SIZE}")
    check("n_best", is_int(o.n_best) and 1 <= o.n_best <= o.beam_size, f"1 to beam_size ({o.beam_size})")
    check(
        "length_penalty",
        is_number(o.length_penalty) and 0 <= o.length_penalty <= MAX_LENGTH_PENALTY,
        f"0 to {MAX_LENGTH_PENALTY}",
    )
    check(
        "max_output_tokens",
        is_int(o.max_output_tokens) and 1 <= o.max_output_tokens <= MAX_OUTPUT_TOKENS,
        f"1 to {MAX_OUTPUT_TOKENS}",
    )
    check(
        "max_length_ratio",
        is_number(o.max_length_ratio) and 0 < o.max_length_ratio <= MAX_LENGTH_RATIO,
        f"above 0 and at most {MAX_LENGTH_RATIO}",
    )
    check(
        "min_output_tokens",
        is_int(o.min_output_tokens) and 0 <= o.min_output_tokens < o.max_output_tokens,
        f"0 to max_output_tokens - 1 ({o.max_output_tokens - 1})",
    )
    return options


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
        """:func:`validate_options`, and a beam that the target vocabulary can fill."""
        validate_options(options)
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
