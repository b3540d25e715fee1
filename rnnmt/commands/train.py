"""`rnnmt train`: train a model from a YAML config."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML config (resumes the run if it has latest.pt)"
    )
    parser.add_argument("config", type=Path)
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock budget, overrides the config"
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="overrides the config's run_dir")
    parser.add_argument("--restart", action="store_true", help="ignore latest.pt and start from scratch")
    parser.set_defaults(func=run, preload_allocator=True)  # see training/allocator.py


def run(args: argparse.Namespace) -> None:
    """Train (or resume) the run of the config; only rank 0 reports."""
    from rnnmt.training.config import load_config, validate
    from rnnmt.training.trainer import train

    config = load_config(args.config)
    if args.max_minutes is not None:
        config.train.max_minutes = args.max_minutes
    if args.run_dir is not None:
        config.run_dir = str(args.run_dir.resolve())
    result = train(validate(config), resume=not args.restart)
    if os.environ.get("RANK", "0") != "0":
        return
    print(
        f"trained {result.steps:,} steps in {result.minutes:.1f} min ({result.tokens_per_second:,.0f} target tokens/s); "
        f"best dev BLEU {result.best_bleu:.2f}: {result.best_checkpoint}"
    )
