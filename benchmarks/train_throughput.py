"""Training throughput of a config with and without input feeding, side by side in one run.

    .venv/bin/python benchmarks/train_throughput.py configs/bible-es-en.yaml --steps 60

Trains each variant for ``--steps`` optimizer steps on the config's training data (tokenizers from
the config's run folder, trained first if missing) and prints target tokens/s, parameters and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from rnnmt.training.batching import make_batches
from rnnmt.training.config import load_config
from rnnmt.training.trainer import Trainer


def measure(config_path: Path, input_feeding: bool, steps: int, warmup: int) -> tuple[float, int]:
    """(target tokens/s over ``steps`` steps after ``warmup`` steps, parameter count)."""
    config = load_config(config_path)
    config.model = dataclasses.replace(config.model, input_feeding=input_feeding)
    tokenizer_dir = config.path(config.run_dir) / "tokenizer"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        if tokenizer_dir.exists():
            (run / "tokenizer").symlink_to(tokenizer_dir)
        config.run_dir = str(run)
        trainer = Trainer(config, resume=False)
        batches = iter(make_batches(trainer.examples, config.train.batch_tokens, config.train.seed, 0))
        trainer.model.train()
        for _ in range(warmup):
            trainer.train_step(next(batches))
        start, tokens = time.perf_counter(), 0
        for _ in range(steps):
            tokens += trainer.train_step(next(batches))[1]
        rate = tokens / (time.perf_counter() - start)
        return rate, sum(p.numel() for p in trainer.model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = [(feeding, *measure(args.config, feeding, args.steps, args.warmup)) for feeding in (False, True)]
    base = rows[0][1]
    print(f"{'decoder':<22}{'target tok/s':>14}{'parameters':>14}{'ratio':>8}")
    for feeding, rate, params in rows:
        name = "input feeding" if feeding else "no input feeding"
        print(f"{name:<22}{rate:>14,.0f}{params:>14,}{rate / base:>8.2f}")


if __name__ == "__main__":
    main()
