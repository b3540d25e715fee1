"""`rnnmt evaluate`: translate a test set with a checkpoint (the PyTorch reference beam search) or a model
package (the ONNX engine), write the hypotheses and score them with sacreBLEU.

A package's scores can be recorded in its manifest (``--record test``), so a shipped model states what
it scores. Evaluating a package never imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnmt.errors import RnnmtError
from rnnmt.scoring import Scores, score
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.translator import TextHypothesis, Translator
from rnnmt.training.corpus import read_lines


@dataclass
class Evaluation:
    hypotheses: list[list[TextHypothesis]]  # per sentence, best first
    scores: Scores | None  # None without references


def load_translator(model: Path, max_batch_rows: int = 256) -> Translator:
    """The ONNX engine for a package directory, the PyTorch reference for a checkpoint file."""
    if model.is_dir():
        from rnnmt.serving.core.translator import Translator

        return Translator.from_package(model, max_batch_rows=max_batch_rows)
    from rnnmt.training.checkpoint import load_model
    from rnnmt.training.reference import reference_translator

    return reference_translator(load_model(model), max_batch_rows)


def evaluate(
    translator: Translator,
    source: Path,
    options: SearchOptions,
    reference: Path | None = None,
    output: Path | None = None,
) -> Evaluation:
    """Translate ``source`` (one sentence per line); write hypotheses (n-best as TSV columns text, score)."""
    texts = read_lines(source)
    refs = read_lines(reference) if reference else None
    if refs is not None and len(refs) != len(texts):
        raise RnnmtError(f"{source} has {len(texts):,} lines but {reference} has {len(refs):,}")
    hyps = translator.translate(texts, options)
    if output is not None:
        lines = (
            "\t".join(h.text if options.n_best == 1 else f"{h.text}\t{h.score:.4f}" for h in sentence)
            for sentence in hyps
        )
        output.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    scores = score([h[0].text for h in hyps], refs) if refs is not None else None
    return Evaluation(hyps, scores)


def evaluation_record(source: Path, sentences: int, options: SearchOptions, scores: Scores) -> dict[str, Any]:
    """What a package's manifest keeps of one evaluation."""
    return {
        "source": source.name,
        "sentences": sentences,
        "bleu": round(scores.bleu, 2),
        "chrf": round(scores.chrf, 2),
        "length_ratio": round(scores.length_ratio, 3),
        "short": round(scores.short, 4),
        "bleu_signature": scores.bleu_signature,
        "chrf_signature": scores.chrf_signature,
        "decoding": dataclasses.asdict(options),
    }
