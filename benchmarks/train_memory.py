"""Training memory and speed by allocator, side by side in one run: `rnnmt train` for a few minutes under
each ``RNNMT_ALLOCATOR`` (training/allocator.py), its resident memory sampled every second.

    ../shared/tools/quiet --wait -- .venv/bin/python benchmarks/train_memory.py configs/bible-es-en.yaml \\
        --minutes 3 --variant glibc-kept --variant 'pad8=glibc-kept;train.pad_to=8' \\
        --variant 'jemalloc-kept=jemalloc;MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1'


Each variant is an allocator, optionally with environment variables (``MALLOC_CONF=...``) and config
overrides. Prints, per variant: steps, steps/s and target tokens/s between the first and last progress record,
seconds from start to the first progress record, RSS at step 200, at each minute and at most, and the
ratio of its steps/s to the first variant's. ``--set train.batch_tokens=4000`` style overrides apply to
every run (``--set`` may repeat).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import training_watch
import yaml


def parse_variant(spec: str) -> tuple[str, dict[str, str], list[str]]:
    """``LABEL=ALLOCATOR;NAME=VALUE;section.option=value`` → (label, environment, config overrides):
    upper-case names are environment variables, dotted ones config overrides. A bare allocator is its
    own label."""
    head, *settings = spec.split(";")
    label, _, allocator = head.partition("=") if "=" in head else (head, "", head)
    env = {"RNNMT_ALLOCATOR": allocator}
    overrides = []
    for setting in settings:
        key, _, value = setting.partition("=")
        if "." in key:
            overrides.append(setting)
        else:
            env[key] = value
    return label, env, overrides


def write_config(values: dict[str, Any], overrides: list[str], base: Path, path: Path) -> Path:
    """``values`` with ``overrides`` (``section.option=value``, YAML values) and data paths made absolute."""
    values = json.loads(json.dumps(values))  # a copy
    for item in overrides:
        key, _, raw = item.partition("=")
        *parents, leaf = key.split(".")
        node = values
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(raw)
    for key in ("train", "dev", "test"):
        if key in values.get("data", {}):
            values["data"][key] = str((base / values["data"][key]).resolve())
    path.write_text(yaml.safe_dump(values))
    return path


def run_one(config: Path, label: str, env: dict[str, str], minutes: float, work: Path) -> dict[str, Any]:
    """Train ``config`` for ``minutes`` with ``env``; its figures."""
    watched = training_watch.train(config, work / label, "--restart", "--max-minutes", str(minutes), env=env)
    logged = watched.records
    return {
        "allocator": label,
        "steps": logged[-1]["step"],
        "steps_per_s": watched.steps_per_s(),
        "target_tokens_per_s": sum(r["tokens_per_s"] for r in logged[1:]) / max(len(logged) - 1, 1),
        "first_record_s": watched.first_record_s,
        "rss_at_step_200": watched.rss_at_step,
        "rss_by_minute": watched.rss_by_minute(),
        "rss_max": watched.rss_max,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument(
        "--variant",
        action="append",
        help="LABEL=ALLOCATOR;ENV=VALUE;section.option=value (see parse_variant; repeat it); "
        "default: each allocator as it comes",
    )
    parser.add_argument("--set", action="append", default=[], help="KEY.PATH=VALUE override for every run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    values = yaml.safe_load(args.config.read_text())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for spec in args.variant or ["jemalloc", "tcmalloc", "glibc-kept", "glibc"]:
            label, env, overrides = parse_variant(spec)
            config = write_config(values, [*args.set, *overrides], args.config.parent, work / f"{label}.yaml")
            results.append(run_one(config, label, env, args.minutes, work))
            print(json.dumps(results[-1]), flush=True)
    base = results[0]["steps_per_s"]
    gb = training_watch.GIB
    print(
        f"\n{'allocator':<11} {'steps':>6} {'steps/s':>8} {'ratio':>6} {'tgt tok/s':>10} {'1st rec s':>9} "
        f"{'RSS@200':>8} {'RSS max':>8}  RSS by minute (GiB)"
    )
    for r in results:
        at200 = f"{r['rss_at_step_200'] / gb:.2f}" if r["rss_at_step_200"] else "-"
        minutes = " ".join(f"{x / gb:.2f}" for x in r["rss_by_minute"])
        print(
            f"{r['allocator']:<11} {r['steps']:>6} {r['steps_per_s']:>8.2f} {r['steps_per_s'] / base:>6.2f} "
            f"{r['target_tokens_per_s']:>10,.0f} {r['first_record_s'] or 0:>9.1f} {at200:>8} "
            f"{r['rss_max'] / gb:>8.2f}  {minutes}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
