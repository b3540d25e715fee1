"""Text in, text out over any decoder backend: tokenize, check, search in length-sorted batches, detokenize.

The onnxruntime engine and the PyTorch reference (`rnnmt evaluate`, validation during training) both
translate through :class:`Translator`, so they tokenize, limit and batch identically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.alignment import Alignment, align
from rnnmt.serving.core.beam_search import DecoderBackend, Hypothesis, search_sorted
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.package import (
    DECODER_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    SHORTLIST_FILE,
    Manifest,
    ModelPackage,
    read_package,
)
from rnnmt.serving.core.segment import Segmented, split_sentences
from rnnmt.serving.core.shortlist import Shortlist
from rnnmt.tokenizers.sentencepiece import EOS_ID, Tokenizer

if TYPE_CHECKING:
    from rnnmt.serving.core.signing import TrustedKeys

DEFAULT_OPTIONS = SearchOptions()

AttentionOf = Callable[[Sequence[int], Sequence[int]], np.ndarray]
"""(source ids with EOS [S], target ids [T]) → the decoder's attention [T,S] forced through the target."""


@dataclass(frozen=True)
class TextHypothesis:
    """A detokenized translation and its length-normalised log-prob score."""

    text: str
    score: float


class Translator:
    """Translates with ``backend``: a model package's ONNX graphs (:meth:`from_package`, the engine of
    serving and batch jobs) or the PyTorch model of a checkpoint (the reference of `rnnmt evaluate`).

    ``max_input_tokens`` (0 = no limit) bounds a source's pieces (EOS not counted); sentences are
    searched in length-sorted batches of at most ``max_batch_rows`` rows (sentences × beam), and padding
    is exact, so a sentence's translation does not depend on the batch it shares. Calls may come from
    several threads: a search keeps its state locally.
    """

    def __init__(
        self,
        backend: DecoderBackend,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        max_input_tokens: int = 0,
        max_batch_rows: int = 256,
        default_options: SearchOptions = DEFAULT_OPTIONS,
        package: ModelPackage | None = None,
        attention: AttentionOf | None = None,
    ) -> None:
        if max_batch_rows < 1:
            raise RnnmtError(f"max_batch_rows must be at least 1, not {max_batch_rows}")
        self.backend = backend
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.max_input_tokens = max_input_tokens
        self.max_batch_rows = max_batch_rows
        self.default_options = default_options
        self.package = package
        self.attention = attention

    @classmethod
    def from_package(
        cls,
        package_dir: Path,
        threads: int = 0,
        max_batch_rows: int = 256,
        trusted_keys: TrustedKeys | None = None,
    ) -> Translator:
        """The translator of a verified model package on onnxruntime (no torch); ``threads`` are
        onnxruntime intra-op threads (0 = its default). Its default options are the manifest's. With
        ``trusted_keys`` the package must be signed by one of them. Graphs, tokenizers and shortlist
        are loaded from the bytes that were verified (:func:`read_package`), not read again."""
        from rnnmt.serving.core.onnx_backend import OnnxBackend

        if threads < 0:
            raise RnnmtError(f"threads must be 0 (onnxruntime's default) or more, not {threads}")
        package, files = read_package(package_dir, trusted_keys)
        manifest = package.manifest
        tokenizers = []
        for path, size in (
            (package.source_tokenizer_path, manifest.source_vocab_size),
            (package.target_tokenizer_path, manifest.target_vocab_size),
        ):
            tokenizer = Tokenizer(files[path.name], str(path))
            if tokenizer.vocab_size != size:
                raise RnnmtError(f"{path} has {tokenizer.vocab_size} pieces but the manifest says {size}")
            tokenizers.append(tokenizer)
        manifest_path = package.root / MANIFEST_FILE
        try:
            defaults = SearchOptions(**manifest.decoding)
        except TypeError as exc:
            raise RnnmtError(f"{manifest_path}: invalid decoding defaults: {exc}") from exc
        src, tgt = tokenizers
        shortlist, shortlist_path = None, package.shortlist_path
        if shortlist_path is not None:
            shortlist = Shortlist.load(files[SHORTLIST_FILE], shortlist_path).check(
                src.vocab_size, tgt.vocab_size, str(shortlist_path)
            )
        attention = manifest.has_attention
        backend = OnnxBackend(
            files[ENCODER_FILE],
            files[DECODER_FILE],
            package.root,
            manifest.decoder_state,
            threads,
            shortlist,
            attention,
        )
        translator = cls(
            backend,
            src,
            tgt,
            manifest.max_input_tokens,
            max_batch_rows,
            defaults,
            package,
            backend.attention_of if attention else None,
        )
        try:
            translator.check_options(defaults)
        except RnnmtError as exc:  # "beam_size must be ..." → "<manifest>: decoding.beam_size must be ..."
            raise RnnmtError(f"{manifest_path}: decoding.{exc}") from exc
        return translator

    @property
    def version(self) -> str:
        """The content version of the translator's package (:meth:`from_package`)."""
        return self._made_from_package().version

    @property
    def manifest(self) -> Manifest:
        """The manifest of the translator's package (:meth:`from_package`)."""
        return self._made_from_package().manifest

    def _made_from_package(self) -> ModelPackage:
        if self.package is None:
            raise RnnmtError("this translator was not made from a model package")
        return self.package

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

    def check_sources(self, sources: Sequence[Sequence[int]], names: Sequence[str] | None = None) -> None:
        """Each source is ``[]`` (an empty text) or pieces + EOS, within the length limit and the vocab.
        An error names the source as ``texts[i]``, or as ``names[i]`` when given."""
        limit, vocab = self.max_input_tokens, self.src_tokenizer.vocab_size
        for i, ids in enumerate(sources):
            name = names[i] if names is not None else f"texts[{i}]"
            if ids and ids[-1] != EOS_ID:
                raise RnnmtError(f"{name} must end with EOS ({EOS_ID})")
            if limit and len(ids) - 1 > limit:
                raise RnnmtError(f"{name} is {len(ids) - 1} tokens long; this model accepts at most {limit}")
            if not all(0 <= t < vocab for t in ids):
                raise RnnmtError(f"{name} has token ids outside the source vocabulary (0 to {vocab - 1})")

    def prepare(self, texts: Sequence[str], names: Sequence[str] | None = None) -> list[list[int]]:
        """The checked sources of ``texts`` (:meth:`tokenize`, then :meth:`check_sources`); an empty text
        gives ``[]``, a text over ``max_input_tokens`` pieces an :class:`RnnmtError` naming it."""
        sources = self.tokenize(texts)
        self.check_sources(sources, names)
        return sources

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

    def prepare_split(self, texts: Sequence[str]) -> tuple[list[list[int]], list[Segmented]]:
        """The texts cut into sentences (the rules of the package's source language) and the checked
        sources of those sentences, in order; an error names ``texts[i] sentence j``."""
        segmented = [split_sentences(text, self.manifest.source_language) for text in texts]
        names = [
            f"texts[{i}] sentence {j + 1}"
            for i, seg in enumerate(segmented)
            for j in range(len(seg.sentences))
        ]
        return self.prepare([s for seg in segmented for s in seg.sentences], names), segmented

    def translate(
        self, texts: Sequence[str], options: SearchOptions, split_sentences: bool = False
    ) -> list[list[TextHypothesis]]:
        """Texts → per text its ``n_best`` translations, the translation of ``n_best`` 1 first (see
        :mod:`~rnnmt.serving.core.beam_search`). A text over ``max_input_tokens`` pieces is an
        :class:`RnnmtError` naming its index. With ``split_sentences``, each text is translated sentence
        by sentence and keeps its whitespace (:func:`join_translations`)."""
        if split_sentences:
            sources, segmented = self.prepare_split(texts)
            return join_translations(segmented, self.texts_of(self.translate_ids(sources, options)))
        return self.texts_of(self.translate_ids(self.tokenize(texts), options))

    def align(self, source: str, target: str) -> Alignment:
        """Which word of ``source`` each word of ``target``, its translation, was translated from
        (:mod:`~rnnmt.serving.core.alignment`); one sentence each, within the length limit."""
        if self.attention is None:
            raise RnnmtError("this model cannot align words: export it again, or `rnnmt upgrade` it")
        source_ids, source_spans = self.src_tokenizer.pieces(source)
        target_ids, target_spans = self.tgt_tokenizer.pieces(target)
        weights = self.attention([*source_ids, EOS_ID], target_ids)
        return align(weights, source, source_spans, target, target_spans)

    def texts_of(self, found: Sequence[Sequence[Hypothesis]]) -> list[list[TextHypothesis]]:
        """The detokenized hypotheses, in the same shape."""
        results = []
        for hyps in found:
            texts_out = self.detokenize([h.tokens for h in hyps])
            results.append([TextHypothesis(text, h.score) for text, h in zip(texts_out, hyps, strict=True)])
        return results


def join_translations(
    segmented: Sequence[Segmented], results: Sequence[Sequence[TextHypothesis]]
) -> list[list[TextHypothesis]]:
    """Per text, its sentences' translations (``results``, in order) joined with the text's whitespace,
    scored with their mean score (0.0 for a text without sentences): as many as its sentences have at
    most, the k-th joining each sentence's k-th translation (its last where it has fewer), so every
    sentence is in every one and the first joins the first of each."""
    sentences = iter(results)
    texts = []
    for seg in segmented:
        found = [next(sentences) for _ in seg.sentences]
        joined = []
        for k in range(max((len(hyps) for hyps in found), default=1)):
            parts = [hyps[min(k, len(hyps) - 1)] for hyps in found]
            score = sum(h.score for h in parts) / len(parts) if parts else 0.0
            joined.append(TextHypothesis(seg.join([h.text for h in parts]), score))
        texts.append(joined)
    return texts
