"""Corpus BLEU and chrF with sacreBLEU, reported with their signatures, and how long the hypotheses are
against their references (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


@dataclass(frozen=True)
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    length_ratio: float  # hypothesis tokens / reference tokens over the corpus (BLEU's tokenization)
    short: float  # share of hypotheses under SHORT of their reference's length in words: dropped clauses

    def report(self) -> str:
        return (
            f"BLEU {self.bleu:.2f} ({self.bleu_signature})\nchrF {self.chrf:.2f} ({self.chrf_signature})\n"
            f"length ratio {self.length_ratio:.3f}; {self.short:.1%} of the hypotheses are under "
            f"{SHORT:.0%} of their reference's length in words"
        )


SHORT = 0.6


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Scores:
    """Corpus-level BLEU and chrF of detokenized hypotheses against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    refs = [list(references)]
    bleu_score = bleu.corpus_score(list(hypotheses), refs)
    short = sum(len(h.split()) < SHORT * len(r.split()) for h, r in zip(hypotheses, references, strict=True))
    return Scores(
        bleu_score.score,
        chrf.corpus_score(list(hypotheses), refs).score,
        str(bleu.get_signature()),
        str(chrf.get_signature()),
        bleu_score.sys_len / max(bleu_score.ref_len, 1),
        short / max(len(hypotheses), 1),
    )
