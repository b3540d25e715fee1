"""Text in, text out over any decoder backend: tokenize, search in length-sorted batches, detokenize.

The onnxruntime engine and the PyTorch reference (`rnnmt evaluate`, validation during training) both
translate through :class:`Translator`, so they tokenize, limit and batch identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rnnmt.errors import RnnmtError
from rnnmt.serving.beam_search import DecoderBackend, Hypothesis, SearchOptions, search_sorted
from rnnmt.tokenizers.sentencepiece import EOS_ID, Tokenizer


@dataclass(frozen=True)
class TextHypothesis:
    text: str
    score: float


class Translator:
    """Translates texts with ``backend``; ``max_input_tokens`` (0 = none) bounds a source's pieces + EOS."""

    def __init__(
        self,
        backend: DecoderBackend,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        max_input_tokens: int = 0,
        max_batch_rows: int = 256,
    ) -> None:
        self.backend = backend
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.max_input_tokens = max_input_tokens
        self.max_batch_rows = max_batch_rows

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Source ids with EOS appended; an empty or blank text gives ``[]`` (it is not translated)."""
        return [
            [*ids, EOS_ID] if ids else [] for ids in self.src_tokenizer.encode([t.strip() for t in texts])
        ]

    def check_lengths(self, sources: Sequence[Sequence[int]]) -> None:
        for index, ids in enumerate(sources):
            if self.max_input_tokens and len(ids) > self.max_input_tokens:
                raise RnnmtError(
                    f"texts[{index}] is {len(ids)} tokens long; this model takes at most {self.max_input_tokens}"
                )

    def translate_ids(
        self, sources: Sequence[Sequence[int]], options: SearchOptions
    ) -> list[list[Hypothesis]]:
        """Hypotheses (best first, ``n_best`` each) of tokenized sources; an empty source gives one empty one."""
        todo = [i for i, ids in enumerate(sources) if ids]
        found = search_sorted(self.backend, [sources[i] for i in todo], options, self.max_batch_rows)
        results = [[Hypothesis([], 0.0)] for _ in sources]
        for i, hyps in zip(todo, found, strict=True):
            results[i] = hyps
        return results

    def detokenize(self, hypotheses: Sequence[Sequence[Hypothesis]]) -> list[list[TextHypothesis]]:
        return [
            [
                TextHypothesis(text, h.score)
                for text, h in zip(self.tgt_tokenizer.decode([h.tokens for h in hyps]), hyps, strict=True)
            ]
            for hyps in hypotheses
        ]

    def translate(self, texts: Sequence[str], options: SearchOptions) -> list[list[TextHypothesis]]:
        sources = self.tokenize(texts)
        self.check_lengths(sources)
        return self.detokenize(self.translate_ids(sources, options))
