"""Two training recipes side by side: throughput, then dev BLEU after equal minutes of training.

    .venv/bin/python benchmarks/recipe.py configs/bible-es-en.yaml --b train.precision=bf16 \\
        --steps 60 --minutes 20 --marks 5,10,20

Recipe A is the config with the ``--a`` overrides, B with the ``--b`` ones (``section.option=value``,
the value read as YAML; e.g. ``model.input_feeding=true``, ``train.precision=bf16``). For each: target
tokens/s over ``--steps`` optimizer steps on real batches, then, with ``--minutes``, a fresh training run of
that many wall-clock minutes (validations included), its greedy dev BLEU at each of ``--marks`` minutes
(the last validation by then) and the beam-5 dev BLEU of its final checkpoint. Recipes that keep the
config's tokenizer settings share the tokenizers of its run folder (trained first if missing). Run it
alone, under ``../shared/tools/quiet``: both cores are needed, and the ratios mean nothing on a busy machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from rnnmt.evaluation import evaluate, load_translator
from rnnmt.serving.core.options import SearchOptions
from rnnmt.training.config import RunConfig, load_config, validate
from rnnmt.training.trainer import Trainer, TrainResult


def overridden(config_path: Path, overrides: list[str]) -> RunConfig:
    """The config with ``section.option=value`` overrides applied (and checked)."""
    config = load_config(config_path)
    for override in overrides:
        key, _, text = override.partition("=")
        section, _, option = key.partition(".")
        part = getattr(config, section, None)
        if not dataclasses.is_dataclass(part) or not hasattr(part, option):
            raise SystemExit(f"unknown option {key!r}")
        setattr(config, section, dataclasses.replace(part, **{option: yaml.safe_load(text)}))
    return validate(config)


@contextmanager
def recipe(config_path: Path, overrides: list[str]) -> Iterator[RunConfig]:
    """The recipe's config with a temporary run folder, sharing the config's tokenizers when it can."""
    config = overridden(config_path, overrides)
    tokenizer_dir = config.path(config.run_dir) / "tokenizer"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        if tokenizer_dir.exists() and not any(o.startswith("tokenizer.") for o in overrides):
            (run / "tokenizer").symlink_to(tokenizer_dir)
        config.run_dir = str(run)
        yield config


def throughput(config_path: Path, overrides: list[str], steps: int, warmup: int) -> tuple[float, int]:
    """(target tokens/s over ``steps`` steps after ``warmup`` steps, parameter count)."""
    with recipe(config_path, overrides) as config:
        trainer = Trainer(config)
        plan = trainer.plan(0)
        batches = (plan[b] for b in range(len(plan)))
        trainer.model.train()
        for _ in range(warmup):
            trainer.train_step(next(batches))
        start, tokens = time.perf_counter(), 0
        for _ in range(steps):
            tokens += trainer.train_step(next(batches))[1]
        rate = tokens / (time.perf_counter() - start)
        return rate, sum(p.numel() for p in trainer.model.parameters())


@dataclasses.dataclass
class Run:
    result: TrainResult
    validations: list[tuple[float, float]]  # (minutes, greedy dev BLEU)
    beam5: float


def timed_run(config_path: Path, overrides: list[str], minutes: float) -> Run:
    """A fresh run of ``minutes`` wall-clock minutes; its validations and the beam-5 dev BLEU at the end."""
    with recipe(config_path, overrides) as config:
        config.train.max_minutes = minutes
        result = Trainer(config).train()
        records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        validations = [(r["minutes"], r["dev_bleu"]) for r in records if "dev_bleu" in r and "minutes" in r]
        d = config.data
        dev = config.path(d.dev)
        source, reference = (dev.with_name(f"{dev.name}.{lang}") for lang in (d.src_lang, d.tgt_lang))
        found = evaluate(
            load_translator(result.best_checkpoint), source, SearchOptions(beam_size=5), reference
        )
        assert found.scores is not None
        return Run(result, validations, found.scores.bleu)


def at(validations: list[tuple[float, float]], minute: float) -> str:
    """The dev BLEU of the last validation by ``minute``."""
    done = [bleu for when, bleu in validations if when <= minute]
    return f"{done[-1]:.2f}" if done else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--a", nargs="*", default=[], metavar="OPTION=VALUE", help="overrides of recipe A")
    parser.add_argument("--b", nargs="*", default=[], metavar="OPTION=VALUE", help="overrides of recipe B")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=0, help="also train each recipe this long (0: skip)")
    parser.add_argument("--marks", default="", help="comma-separated minutes to report dev BLEU at")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    recipes: dict[str, list[str]] = {
        "A " + (" ".join(args.a) or "(config)"): args.a,
        "B " + (" ".join(args.b) or "(config)"): args.b,
    }
    rates = {name: throughput(args.config, o, args.steps, args.warmup) for name, o in recipes.items()}
    runs = (
        {name: timed_run(args.config, o, args.minutes) for name, o in recipes.items()} if args.minutes else {}
    )
    marks = [float(m) for m in args.marks.split(",") if m] or [args.minutes]
    width = max(len(name) for name in recipes) + 2
    base_rate = next(iter(rates.values()))[0]
    header = f"{'recipe':<{width}}{'parameters':>12}{'target tok/s':>14}{'ratio':>7}"
    if runs:
        header += (
            f"{'steps':>8}" + "".join(f"{'BLEU@' + format(m, 'g'):>10}" for m in marks) + f"{'beam5':>8}"
        )
    print(header)
    for name, (rate, params) in rates.items():
        line = f"{name:<{width}}{params:>12,}{rate:>14,.0f}{rate / base_rate:>7.2f}"
        if runs:
            run = runs[name]
            line += f"{run.result.steps:>8,}" + "".join(f"{at(run.validations, m):>10}" for m in marks)
            line += f"{run.beam5:>8.2f}"
        print(line)


if __name__ == "__main__":
    main()
