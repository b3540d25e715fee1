"""The translation engine: a verified model package on onnxruntime, translating through :class:`Translator`.

Sentences are sorted by length and searched in batches of at most ``max_batch_rows`` rows (sentences ×
beam), so padding stays small and memory bounded; results come back in input order. Padding is exact,
so a sentence's translation does not depend on the batch it shares. No torch is imported here.
"""

from __future__ import annotations

from pathlib import Path

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.onnx_backend import OnnxBackend
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.package import MANIFEST_FILE, ModelPackage, load_package
from rnnmt.serving.core.translator import Translator
from rnnmt.tokenizers.sentencepiece import Tokenizer


class Engine(Translator):
    """A :class:`Translator` over a model package's ONNX graphs; ``threads`` are onnxruntime intra-op
    threads (0 = its default)."""

    def __init__(self, package_dir: Path, threads: int = 0, max_batch_rows: int = 256) -> None:
        if threads < 0:
            raise RnnmtError(f"threads must be 0 (onnxruntime's default) or more, not {threads}")
        self.package: ModelPackage = load_package(package_dir)
        self.manifest = self.package.manifest
        src_tokenizer = Tokenizer.load(self.package.source_tokenizer_path)
        tgt_tokenizer = Tokenizer.load(self.package.target_tokenizer_path)
        for path, tokenizer, size in (
            (self.package.source_tokenizer_path, src_tokenizer, self.manifest.source_vocab_size),
            (self.package.target_tokenizer_path, tgt_tokenizer, self.manifest.target_vocab_size),
        ):
            if tokenizer.vocab_size != size:
                raise RnnmtError(f"{path} has {tokenizer.vocab_size} pieces but the manifest says {size}")
        backend = OnnxBackend(
            self.package.encoder_path, self.package.decoder_path, self.manifest.decoder_state, threads
        )
        super().__init__(
            backend, src_tokenizer, tgt_tokenizer, self.manifest.max_input_tokens, max_batch_rows
        )
        manifest_path = self.package.root / MANIFEST_FILE
        try:
            self.default_options = SearchOptions(**self.manifest.decoding)
        except TypeError as exc:
            raise RnnmtError(f"{manifest_path}: invalid decoding defaults: {exc}") from exc
        try:
            self.check_options(self.default_options)
        except RnnmtError as exc:  # "beam_size must be ..." → "<manifest>: decoding.beam_size must be ..."
            raise RnnmtError(f"{manifest_path}: decoding.{exc}") from exc
