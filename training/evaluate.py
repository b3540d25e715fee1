"""`rnnmt evaluate`: the PyTorch reference beam search over a test set, scored with sacreBLEU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnnmt.errors import RnnmtError
from rnnmt.scoring import Scores, score
from rnnmt.serving.beam_search import SearchOptions
from rnnmt.serving.translator import TextHypothesis, Translator
from rnnmt.training.checkpoint import LoadedModel, load_model
from rnnmt.training.corpus import read_lines
from rnnmt.training.torch_backend import TorchBackend


@dataclass
class Evaluation:
    hypotheses: list[list[TextHypothesis]]
    scores: Scores | None


def reference_translator(loaded: LoadedModel, max_batch_rows: int = 256) -> Translator:
    """A translator over the PyTorch model: the reference the ONNX engine is checked against."""
    return Translator(
        TorchBackend(loaded.model), loaded.src_tokenizer, loaded.tgt_tokenizer, max_batch_rows=max_batch_rows
    )


def evaluate(
    checkpoint: Path,
    source: Path,
    options: SearchOptions,
    reference: Path | None = None,
    output: Path | None = None,
    max_batch_rows: int = 256,
) -> Evaluation:
    """Translate ``source`` (one sentence per line); write hypotheses (n-best as TSV columns text, score)."""
    texts = read_lines(source)
    refs = read_lines(reference) if reference else None
    if refs is not None and len(refs) != len(texts):
        raise RnnmtError(f"{source} has {len(texts):,} lines but {reference} has {len(refs):,}")
    translator = reference_translator(load_model(checkpoint), max_batch_rows)
    hyps = translator.translate(texts, options)
    if output is not None:
        lines = (
            "\t".join(h.text if options.n_best == 1 else f"{h.text}\t{h.score:.4f}" for h in sentence)
            for sentence in hyps
        )
        output.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    scores = score([h[0].text for h in hyps], refs) if refs is not None else None
    return Evaluation(hyps, scores)
