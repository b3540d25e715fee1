"""`rnnmt plot`: a run's training loss and dev BLEU as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="plot training loss and dev BLEU of a run to a PNG")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="the PNG (default: RUN_DIR/metrics.png)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Plot RUN_DIR/metrics.jsonl."""
    from rnnmt.training.plot import plot_metrics

    out = plot_metrics(args.run_dir / "metrics.jsonl", args.out or args.run_dir / "metrics.png")
    print(f"plot written to {out}")
