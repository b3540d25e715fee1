"""A short check of training on a GPU: the tiny toy config for a few hundred steps on CUDA, saved, resumed
for more steps, exported to a package and verified, its steps/s printed next to the CPU's in the same run.

    .venv/bin/python benchmarks/gpu_check.py --steps 300 --out /tmp/gpu-check

Each device trains in its own `rnnmt train` process (so its allocator and device are chosen as in real
use): ``--steps`` steps, then the run is resumed to ``--steps`` + 100 and must continue from its
``latest.pt``. The last checkpoint is exported with `rnnmt export` (on the CPU, as a CPU-only machine
would) and the package translates the toy corpus. Prints one line per device and ``ok`` at the end, or
exits non-zero naming the step that failed. Without CUDA it says so and checks the CPU alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from rnnmt.evaluation import load_translator
from rnnmt.serving.core.options import SearchOptions
from rnnmt.training.corpus import write_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import tiny_config, toy_pairs


def rnnmt(*args: str) -> str:
    command = [str(Path(sys.executable).with_name("rnnmt")), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"rnnmt {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def check(device: str, data: Path, out: Path, steps: int) -> dict[str, object]:
    run_dir = out / device.replace(":", "-")
    values = tiny_config(data, run_dir, max_steps=steps, validate_every=100, log_every=10)
    values["train"].update(device=device, precision="bf16", threads=0)
    config = out / f"{run_dir.name}.yaml"
    config.write_text(yaml.safe_dump(values))
    started = time.monotonic()
    rnnmt("train", str(config), "--restart")
    first = time.monotonic() - started
    values["train"]["max_steps"] = steps + 100
    config.write_text(yaml.safe_dump(values))
    rnnmt("train", str(config))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    resumed = [r["step"] for r in logged if r["step"] > steps]
    if not resumed or resumed[0] != steps + 10:
        raise SystemExit(f"{device}: the resumed run did not continue from step {steps}: {resumed[:3]}")
    rates = [r for r in logged if r["step"] <= steps]
    per_s = (rates[-1]["step"] - rates[0]["step"]) / max(
        (rates[-1]["minutes"] - rates[0]["minutes"]) * 60, 1e-9
    )
    package = out / f"{run_dir.name}-package"
    shutil.rmtree(package, ignore_errors=True)
    rnnmt("export", str(run_dir / "best.pt"), "--out", str(package))
    translator = load_translator(package, 64)  # the ONNX engine, on the CPU
    hyps = translator.translate([p.src for p in toy_pairs()], SearchOptions(beam_size=5))
    translated = [h[0].text for h in hyps]
    right = sum(t == p.tgt for t, p in zip(translated, toy_pairs(), strict=False))
    return {"device": device, "steps_per_s": round(per_s, 1), "first_run_s": round(first, 1), "exact": right}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rnnmt-gpu-check"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    write_split(data / "train", toy_pairs(), "es", "en")
    write_split(data / "dev", toy_pairs()[::6], "es", "en")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
        print(f"CUDA: {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}")
    else:
        print("no CUDA device here: checking the CPU only")
    for device in devices:
        result = check(device, data, args.out, args.steps)
        print(json.dumps(result), flush=True)
        if int(result["exact"]) < len(toy_pairs()) * 0.9:  # type: ignore[call-overload]
            raise SystemExit(f"{device}: only {result['exact']} of {len(toy_pairs())} toy sentences exact")
    print("ok")


if __name__ == "__main__":
    main()
