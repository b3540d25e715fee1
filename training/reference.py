"""The PyTorch reference translator: the checkpoint's model under the shared beam search, which the ONNX
engine is checked against (`rnnmt evaluate CHECKPOINT`)."""

from __future__ import annotations

from rnnmt.serving.core.translator import Translator
from rnnmt.training.allocator import keep_freed_memory
from rnnmt.training.checkpoint import LoadedModel
from rnnmt.training.torch_backend import TorchBackend


def reference_translator(loaded: LoadedModel, max_batch_rows: int = 256) -> Translator:
    """A translator over the PyTorch model of ``loaded`` (and glibc set to keep freed memory, as for
    training: the reference runs as fast as PyTorch here can)."""
    keep_freed_memory()
    return Translator(
        TorchBackend(loaded.model), loaded.src_tokenizer, loaded.tgt_tokenizer, max_batch_rows=max_batch_rows
    )
