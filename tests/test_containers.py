"""The containerized deployment, for real: scripts/container-test.sh builds the images and runs them
with docker-compose (server, batch, trainer, scale-out behind lb), serving the session's tiny model.

It needs Docker: as root on Debian the script installs docker.io and mmdebstrap and starts dockerd
itself; elsewhere the test is skipped unless a Docker daemon answers. Set RNNMT_SKIP_CONTAINER_TEST=1
to skip it (a few minutes the first time on a machine, about a minute and a half after that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "container-test.sh"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def _skip_reason() -> str | None:
    if os.environ.get("RNNMT_SKIP_CONTAINER_TEST"):
        return "RNNMT_SKIP_CONTAINER_TEST is set"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return None  # the script installs and starts what it needs
    if not _docker_answers():
        return "no Docker daemon answers, and only root on Debian can install and start one"
    return None


def test_compose_deployment(tiny_checkpoint: Path, tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from rnnmt.training.export import export_package

    models = tmp_path / "models"
    export_package(tiny_checkpoint, models / "toy")
    log = tmp_path / "container-test.log"
    with log.open("w") as out:
        result = subprocess.run(
            ["bash", str(SCRIPT), "--model", str(models), "--expect", "The dog eats bread."],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=20 * 60,
        )
    text = log.read_text(errors="replace")
    print(text)  # shown by pytest -rA or on failure
    tail = "\n".join(text.splitlines()[-80:])
    assert result.returncode == 0, f"scripts/container-test.sh failed ({result.returncode}):\n{tail}"
    assert "container test passed" in text
