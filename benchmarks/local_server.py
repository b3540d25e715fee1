"""A local `rnnmt serve` process for the benchmarks that measure a server over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path


class ServerProcess:
    """`rnnmt serve` on a free loopback port, its address (and ``http_port``, 0 unless ``--http-port 0``
    is in ``extra``) read from its startup log line."""

    def __init__(self, model_dir: Path, extra: Sequence[str] = ()) -> None:
        rnnmt = Path(sys.executable).with_name("rnnmt")
        command = [str(rnnmt), "serve", "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen([*command, *extra], stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        for line in self.process.stderr:
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("message") == "serving":
                self.address = record["address"]
                self.http_port = int(record["http"].rsplit(":", 1)[1]) if record["http"] else 0
                break
        else:
            raise SystemExit(f"the server did not start (exit code {self.process.wait()})")
        # Drain the request log so the server never blocks on a full pipe.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
