"""A `rnnmt train` process watched from outside: its resident memory every second and its progress
records, for the training benchmarks (train_memory.py, corpus_scale.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1 << 30


def rss_bytes(pid: int) -> int:
    """The resident set of process ``pid`` (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def progress_records(metrics: Path) -> list[dict[str, Any]]:
    """The progress records (those with a loss) of a run's metrics.jsonl so far."""
    if not metrics.exists():
        return []
    lines = metrics.read_text().splitlines()
    return [r for r in (json.loads(line) for line in lines if line.strip()) if "loss" in r]


@dataclass
class Watched:
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, RSS bytes)
    first_record_s: float | None = None  # seconds from start to the first progress record
    rss_at_step: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    def steps_per_s(self, after_step: int = 0) -> float:
        """Steps per training second between the first record past ``after_step`` and the last."""
        logged = [r for r in self.records if r["step"] > after_step] or self.records
        first, last = logged[0], logged[-1]
        return (last["step"] - first["step"]) / max((last["minutes"] - first["minutes"]) * 60, 1e-9)

    def rss_by_minute(self) -> list[int]:
        """The highest RSS seen in each minute."""
        minutes = int(self.samples[-1][0] // 60) + 1 if self.samples else 0
        return [
            max((r for t, r in self.samples if m * 60 <= t < (m + 1) * 60), default=0) for m in range(minutes)
        ]

    @property
    def rss_max(self) -> int:
        return max((r for _, r in self.samples), default=0)


def train(
    config: Path, run_dir: Path, *args: str, env: dict[str, str] | None = None, rss_step: int = 200
) -> Watched:
    """Run `rnnmt train config --run-dir run_dir *args`, sampling it every second until it exits; its
    stdout and stderr go to ``<run_dir>.log``. A failure is a SystemExit with the log's end."""
    rnnmt = Path(sys.executable).with_name("rnnmt")
    command = [str(rnnmt), "train", str(config), "--run-dir", str(run_dir), *args]
    log = run_dir.with_name(run_dir.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=output, stderr=output)
    watched = Watched()
    metrics = run_dir / "metrics.jsonl"
    while process.poll() is None:
        now, rss = time.monotonic() - started, rss_bytes(process.pid)
        watched.samples.append((now, rss))
        if watched.rss_at_step is None:
            steps = [r["step"] for r in progress_records(metrics)]
            if steps and watched.first_record_s is None:
                watched.first_record_s = now
            if steps and steps[-1] >= rss_step:
                watched.rss_at_step = rss
        time.sleep(1.0)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}:\n{log.read_text()[-3000:]}")
    watched.records = progress_records(metrics)
    return watched
