"""`rnnmt plot`: training loss and dev BLEU over time, from a run's ``metrics.jsonl``, as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from rnnmt.errors import RnnmtError


def plot_metrics(metrics: Path, out: Path) -> Path:
    if not metrics.is_file():
        raise RnnmtError(f"no metrics log at {metrics}")
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    losses = [r for r in records if "loss" in r]
    dev = [r for r in records if "dev_bleu" in r and not r.get("averaged")]
    if not losses and not dev:
        raise RnnmtError(f"{metrics} holds no training records yet")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_ax = plt.subplots(figsize=(8, 4.5))
    loss_ax.plot(
        [r["minutes"] for r in losses], [r["loss"] for r in losses], color="tab:blue", label="training loss"
    )
    loss_ax.set_xlabel("training minutes")
    loss_ax.set_ylabel("loss per target token", color="tab:blue")
    bleu_ax = loss_ax.twinx()
    bleu_ax.plot(
        [r["minutes"] for r in dev], [r["dev_bleu"] for r in dev], "o-", color="tab:red", label="dev BLEU"
    )
    bleu_ax.set_ylabel("dev BLEU (greedy)", color="tab:red")
    fig.suptitle(metrics.parent.name)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
