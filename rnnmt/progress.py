"""A progress bar for long jobs (training, batch translation): done/total, rate, ETA, extra fields.

On a terminal it redraws one line; otherwise (logs, CI) it prints a line at most every ``interval`` s.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    def __init__(self, total: float, unit: str, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, done: float, rate: float | None = None, force: bool = False, **fields: str) -> None:
        """Show ``done`` of ``total``; ``rate`` (units/s) defaults to the average since the start."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self.start
        rate = rate if rate is not None else done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 and self.total else 0.0
        frac = min(1.0, done / self.total) if self.total else 0.0
        bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
        extra = "".join(f" | {k} {v}" for k, v in fields.items())
        line = (
            f"[{bar}] {frac:4.0%} {done:,.0f}/{self.total:,.0f} {self.unit} | {rate:,.1f} {self.unit}/s"
            f"{extra} | {format_duration(elapsed)} elapsed, ETA {format_duration(eta)}"
        )
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
