"""How training's costs grow with the corpus: 30 k to 10 M pairs, one table.

    ../shared/tools/quiet --wait -- .venv/bin/python benchmarks/corpus_scale.py configs/bible-es-en.yaml \\
        --sizes 30000,300000,3000000,10000000 --work /work/scale --long-minutes 60

Each corpus is the config's training split repeated to the size, copy k > 0 with `` k`` appended to both
sides of every pair (so cleaning keeps the copies: they are not duplicates). For each size:

1. `rnnmt data prepare` on the raw files (normalisation, limits, hash deduplication): seconds, pairs/s;
   at ``--langid-size`` also with ``--langid`` (its pairs/s);
2. a cold `rnnmt train` of the config on the prepared split for ``--steps`` steps: tokenizer trained on
   a sample, store built (its size on disk), then training: seconds from start to the first step, RSS at
   step 200, steps/s;
3. a warm run: a fresh run folder given the cold run's tokenizer, so the store is found in the cache:
   seconds to the first step and steps/s again. For the largest size it lasts ``--long-minutes`` and
   prints its RSS per minute (flat memory: within 10% after the first 5 minutes).

Prints one JSON line per size as it goes and the table at the end (``--json`` writes all of it).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import training_watch
import yaml
from training_watch import GIB


def repeat_corpus(src: Path, tgt: Path, size: int, out: Path) -> tuple[Path, Path]:
    """``size`` pairs: the lines of ``src``/``tgt`` again and again, copy k > 0 marked with `` k``."""
    lines = [path.read_text(encoding="utf-8").splitlines() for path in (src, tgt)]
    paths = (out / f"raw-{size}.es", out / f"raw-{size}.en")
    if all(path.exists() for path in paths):
        return paths
    for side, path in zip(lines, paths, strict=True):
        with path.open("w", encoding="utf-8") as f:
            for k in range(0, size // len(side) + 1):
                block = side[: size - k * len(side)]
                mark = f" {k}" if k else ""
                f.write("".join(f"{line}{mark}\n" for line in block))
    return paths


def rnnmt(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("rnnmt")), *args], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"rnnmt {' '.join(args)}:\n{done.stderr[-3000:]}")
    return time.monotonic() - started, done.stdout


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(values: dict[str, Any], size: int, args: argparse.Namespace, long_run: bool) -> dict[str, Any]:
    work = args.work / str(size)
    work.mkdir(parents=True, exist_ok=True)
    prefix = (args.config.parent / values["data"]["train"]).resolve()
    d = values["data"]
    raw = repeat_corpus(
        prefix.with_name(f"{prefix.name}.{d['src_lang']}"),
        prefix.with_name(f"{prefix.name}.{d['tgt_lang']}"),
        size,
        args.work,
    )
    result: dict[str, Any] = {"pairs": size, "text_bytes": sum(p.stat().st_size for p in raw)}
    langs = ["--src-lang", d["src_lang"], "--tgt-lang", d["tgt_lang"]]
    seconds, out = rnnmt(
        "data", "prepare", "--src", str(raw[0]), "--tgt", str(raw[1]), "--out", str(work), *langs
    )
    result |= {
        "prepare_s": round(seconds, 1),
        "prepare_pairs_per_s": round(size / seconds),
        "prepared": out.strip(),
    }
    if size == args.langid_size:
        lang_dir = work / "langid"
        seconds, out = rnnmt(
            "data",
            "prepare",
            "--src",
            str(raw[0]),
            "--tgt",
            str(raw[1]),
            "--out",
            str(lang_dir),
            *langs,
            "--langid",
        )
        result |= {"langid_pairs_per_s": round(size / seconds), "langid_prepared": out.strip()}
        shutil.rmtree(lang_dir)
    config = work / "config.yaml"
    values = json.loads(json.dumps(values))  # a copy
    values["data"] |= {"train": str(work / "train"), "cache_dir": str(work / "cache")}
    values["train"] |= {"max_steps": args.steps, "max_minutes": 0, "log_every": 1, "validate_every": 100_000}
    for key in ("dev", "test"):
        values["data"][key] = str((args.config.parent / values["data"][key]).resolve())
    config.write_text(yaml.safe_dump(values))
    for old in work.glob("run-*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    shutil.rmtree(work / "cache", ignore_errors=True)
    cold = training_watch.train(config, work / "run-cold", "--restart")
    built = re.search(r"corpus store: .* in \S+ \(([\d,]+) pairs/s\)", (work / "run-cold.log").read_text())
    result |= {
        "store_pairs_per_s": int(built[1].replace(",", "")) if built else None,
        "store_bytes": disk_bytes(work / "cache"),
        "cold_first_step_s": round(cold.first_record_s or 0, 1),
        "rss_at_step_200": cold.rss_at_step,
        "cold_steps_per_s": round(cold.steps_per_s(after_step=20), 3),
    }
    warm_dir = work / "run-warm"
    shutil.copytree(work / "run-cold" / "tokenizer", warm_dir / "tokenizer")
    if long_run:
        values["train"] |= {
            "max_steps": 0,
            "max_minutes": args.long_minutes,
            "validate_every": 800,
        }
        config.write_text(yaml.safe_dump(values))
    warm = training_watch.train(config, warm_dir)
    result |= {
        "warm_first_step_s": round(warm.first_record_s or 0, 1),
        "warm_steps_per_s": round(warm.steps_per_s(after_step=20), 3),
        "warm_rss_max": warm.rss_max,
    }
    if long_run:
        by_minute = warm.rss_by_minute()
        settled = by_minute[5:] or by_minute
        result |= {
            "long_minutes": args.long_minutes,
            "rss_by_minute": by_minute,
            "rss_spread_after_5_min": round(max(settled) / max(min(settled), 1) - 1, 3),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--sizes", default="30000,300000,3000000,10000000")
    parser.add_argument("--work", type=Path, required=True, help="a folder with room for the corpora")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--long-minutes", type=float, default=60.0, help="the warm run of the largest size")
    parser.add_argument("--langid-size", type=int, default=300_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    values = yaml.safe_load(args.config.read_text())
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for size in sizes:
        results.append(measure(values, size, args, long_run=size == sizes[-1] and args.long_minutes > 0))
        print(json.dumps(results[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(
        f"\n{'pairs':>11} {'prep s':>7} {'pairs/s':>8} {'text GB':>8} {'store p/s':>9} {'store GB':>8} "
        f"{'cold 1st s':>10} "
        f"{'warm 1st s':>10} {'RSS@200':>8} {'steps/s':>8} {'warm max':>8}"
    )
    for r in results:
        print(
            f"{r['pairs']:>11,} {r['prepare_s']:>7.0f} {r['prepare_pairs_per_s']:>8,} "
            f"{r['text_bytes'] / 1e9:>8.2f} {r['store_pairs_per_s'] or 0:>9,} {r['store_bytes'] / 1e9:>8.2f} "
            f"{r['cold_first_step_s']:>10.0f} "
            f"{r['warm_first_step_s']:>10.0f} {(r['rss_at_step_200'] or 0) / GIB:>8.2f} "
            f"{r['warm_steps_per_s']:>8.2f} {r['warm_rss_max'] / GIB:>8.2f}"
        )
    for r in results:
        if "rss_by_minute" in r:
            print(
                f"\n{r['pairs']:,} pairs, {r['long_minutes']:.0f} min: RSS by minute (GiB) "
                + " ".join(f"{x / GIB:.2f}" for x in r["rss_by_minute"])
                + f"; spread after 5 min {r['rss_spread_after_5_min']:.1%}"
            )
        if "langid_pairs_per_s" in r:
            print(
                f"with --langid at {r['pairs']:,} pairs: {r['langid_pairs_per_s']:,} pairs/s ({r['langid_prepared']})"
            )


if __name__ == "__main__":
    main()
