"""Input feeding or not, side by side: training throughput and dev BLEU per minute of training.

    .venv/bin/python benchmarks/input_feeding.py configs/bible-es-en.yaml --steps 60 --minutes 15

For each decoder variant (the config's model with ``input_feeding`` false, then true): target tokens/s
over ``--steps`` optimizer steps, then, with ``--minutes``, a fresh training run of that many wall-clock
minutes under the config's settings (validations included) and its greedy dev BLEU at the end. Both
variants use the tokenizers of the config's run folder (trained first if missing) and temporary run
folders. Run it alone: both cores are needed, and the ratios mean nothing on a busy machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rnnmt.training.batching import make_batches
from rnnmt.training.config import RunConfig, load_config
from rnnmt.training.trainer import Trainer, TrainResult


@contextmanager
def variant_config(config_path: Path, input_feeding: bool) -> Iterator[RunConfig]:
    """The config with ``input_feeding`` set and a temporary run folder sharing the config's tokenizers."""
    config = load_config(config_path)
    config.model = dataclasses.replace(config.model, input_feeding=input_feeding)
    tokenizer_dir = config.path(config.run_dir) / "tokenizer"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        if tokenizer_dir.exists():
            (run / "tokenizer").symlink_to(tokenizer_dir)
        config.run_dir = str(run)
        yield config


def throughput(config_path: Path, input_feeding: bool, steps: int, warmup: int) -> tuple[float, int]:
    """(target tokens/s over ``steps`` steps after ``warmup`` steps, parameter count)."""
    with variant_config(config_path, input_feeding) as config:
        trainer = Trainer(config)  # a new run folder: nothing to resume, the shared tokenizers kept
        batches = iter(make_batches(trainer.examples, config.train.batch_tokens, config.train.seed, 0))
        trainer.model.train()
        for _ in range(warmup):
            trainer.train_step(next(batches))
        start, tokens = time.perf_counter(), 0
        for _ in range(steps):
            tokens += trainer.train_step(next(batches))[1]
        rate = tokens / (time.perf_counter() - start)
        return rate, sum(p.numel() for p in trainer.model.parameters())


def timed_run(config_path: Path, input_feeding: bool, minutes: float) -> TrainResult:
    """A fresh training run of ``minutes`` wall-clock minutes; its best dev BLEU is the final one or better."""
    with variant_config(config_path, input_feeding) as config:
        config.train.max_minutes = minutes
        return Trainer(config).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--minutes", type=float, default=0, help="also train each variant this long (0: skip)"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    variants = {"no input feeding": False, "input feeding": True}
    rates = {
        name: throughput(args.config, feeding, args.steps, args.warmup) for name, feeding in variants.items()
    }
    runs = (
        {name: timed_run(args.config, feeding, args.minutes) for name, feeding in variants.items()}
        if args.minutes
        else {}
    )
    base_rate = rates["no input feeding"][0]
    header = f"{'decoder':<20}{'parameters':>12}{'target tok/s':>14}{'ratio':>7}"
    if runs:
        header += f"{'steps in ' + format(args.minutes, 'g') + ' min':>18}{'dev BLEU':>10}{'BLEU/min':>10}"
    print(header)
    for name, (rate, params) in rates.items():
        line = f"{name:<20}{params:>12,}{rate:>14,.0f}{rate / base_rate:>7.2f}"
        if runs:
            run = runs[name]
            line += f"{run.steps:>18,}{run.best_bleu:>10.2f}{run.best_bleu / run.minutes:>10.3f}"
        print(line)


if __name__ == "__main__":
    main()
