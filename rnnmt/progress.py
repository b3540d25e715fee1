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

    def update(self, done: float, fraction: float | None = None, force: bool = False, **fields: str) -> None:
        """Show ``done`` units; ``fraction`` of the job done defaults to ``done / total`` (none if no total)."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if fraction is None and self.total:
            fraction = done / self.total
        extra = "".join(f" | {k} {v}" for k, v in fields.items())
        count = f"{done:,.0f}/{self.total:,.0f}" if self.total else f"{done:,.0f}"
        line = f"{count} {self.unit} | {rate:,.1f} {self.unit}/s{extra} | {format_duration(elapsed)} elapsed"
        if fraction is not None:
            fraction = min(1.0, max(0.0, fraction))
            eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
            bar = "#" * int(fraction * 20) + "." * (20 - int(fraction * 20))
            line = f"[{bar}] {fraction:4.0%} {line}, ETA {format_duration(eta)}"
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
