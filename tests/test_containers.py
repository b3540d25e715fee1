"""The containerized deployment, for real: the images built by scripts/docker-build.sh, run with
docker-compose (server, batch, trainer, the image with models baked in, scale-out behind lb) and serving
the session's tiny model, one test per scenario, each in a compose project of its own that is always
taken down.

The static checks (hadolint, `docker-compose config`) need no daemon and always run. The rest runs when
a Docker daemon answers, or when RNNMT_CONTAINER_TEST=1 (CI sets it): then, as root on Debian, the tests
install docker.io and mmdebstrap and start dockerd themselves when needed (and stop it at the end,
unless RNNMT_KEEP_DOCKERD=1); RNNMT_CONTAINER_TEST=0 skips it. A few minutes the first time on a
machine (the base image and the images are built once, then cached), about a minute and a half after:

    RNNMT_CONTAINER_TEST=1 .venv/bin/pytest tests/test_containers.py
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from containers import (
    ROOT,
    SERVE_IMAGE,
    TRAIN_IMAGE,
    Project,
    build_images,
    docker_answers,
    exit_code,
    forced,
    inspect,
    install_packages,
    install_tools,
    json_log,
    logs,
    metrics,
    replica_calls,
    run,
    skip_reason,
    start_dockerd,
    stop_dockerd,
    tool,
    translate,
    unique_name,
    wait_healthy,
)

SOURCE, EXPECTED = "El perro come pan.", "The dog eats bread."  # what the tiny model must do
BATCH_INPUT = [SOURCE, "Un gato bebe leche.", "El niño ve agua."]
# The pipeline of the reference recipe with a model and a step count small enough for a test.
CI_TINY_CONFIG = """\
run_dir: ../runs/ci-tiny
data: {train: ../data/bible/train, dev: ../data/bible/dev, src_lang: es, tgt_lang: en, max_train_tokens: 60}
tokenizer: {vocab_size: 400}
model: {emb_size: 16, encoder_hidden: 16, decoder_hidden: 32, attention_size: 16, dropout: 0.0}
train: {batch_tokens: 1500, max_steps: 20, validate_every: 20, dev_max_sentences: 8, keep_best: 1, log_every: 10, threads: 1}
"""


# -- static checks: no daemon needed ---------------------------------------------------------------


def test_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra: pip install -e '.[dev]')")
    dockerfiles = sorted((ROOT / "docker").glob("*.Dockerfile"))
    run([hadolint, "--failure-threshold", "error", *dockerfiles])


def test_compose_config() -> None:
    if tool("docker-compose") is None:
        pytest.skip("docker-compose is not installed (the dev extra: pip install -e '.[dev]')")
    project = Project(unique_name("rnnmt-config"))
    for scaled in (False, True):
        project("--profile", "train", "--profile", "batch", "config", "-q", scaled=scaled)


# -- fixtures: the daemon and images, the model, a compose project -----------------------------------


@pytest.fixture(scope="session")
def docker_images() -> Iterator[None]:
    """A Docker daemon that answers (installed and started here when RNNMT_CONTAINER_TEST=1 and needed),
    the dev tools, and the images: the base image (once), rnnmt-serve, rnnmt-train and rnnmt-lb."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    started, previous = None, None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a CI timeout, say) interrupts the run like Ctrl-C: the fixtures' teardown still runs.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if forced():
            install_packages()
            if not docker_answers():
                started = start_dockerd()
        install_tools()
        versions = "docker {{.Client.Version}}, dockerd {{.Server.Version}}"
        print(run(["docker", "version", "--format", versions]).stdout)
        print(build_images())
        yield
    finally:
        if started is not None and not os.environ.get("RNNMT_KEEP_DOCKERD"):
            stop_dockerd(started)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def models(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the session's tiny model as ``toy`` (exported, as `rnnmt export` does),
    readable by the images' user (uid 10001) through a bind mount."""
    from rnnmt.training.export import export_package

    repository = tmp_path_factory.mktemp("container-models")
    export_package(tiny_checkpoint, repository / "toy")
    for path in [repository, *repository.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return repository


@pytest.fixture
def project(docker_images: None, models: Path, tmp_path: Path) -> Iterator[Project]:
    """A compose project of its own (serving ``models``, ports published on free loopback ports, a batch
    folder), taken down with its containers, networks and volumes whatever the test did."""
    batch = tmp_path / "batch"
    batch.mkdir()
    batch.chmod(0o777)  # written by the images' user, uid 10001
    project = Project(
        unique_name("rnnmt-test"),
        {
            "RNNMT_MODELS": str(models),
            "RNNMT_PUBLISH_PORT": "127.0.0.1:",  # any free port
            "RNNMT_METRICS_PUBLISH_PORT": "127.0.0.1:",
            "RNNMT_HTTP_PUBLISH_PORT": "127.0.0.1:",
            "RNNMT_BATCH_DIR": str(batch),
        },
    )
    try:
        yield project
    finally:
        print(f"== logs of {project.name}\n{project.logs()}")  # shown when the test failed
        project.down()


def _batch_dir(project: Project) -> Path:
    return Path(project.env["RNNMT_BATCH_DIR"])


# -- the scenarios -----------------------------------------------------------------------------------


def test_images(docker_images: None) -> None:
    """Both images run as uid 10001; the serving image has no torch, the training image the CPU build."""
    for image in (SERVE_IMAGE, TRAIN_IMAGE):
        assert inspect(image, "{{.Config.User}}") == "10001:10001"
    python = ["docker", "run", "--rm", "--entrypoint", "python"]
    no_torch = run([*python, SERVE_IMAGE, "-c", "import torch"], check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    torch = run([*python, TRAIN_IMAGE, "-c", "import torch; print(torch.__version__)"]).stdout.strip()
    assert torch.endswith("+cpu")


def test_server_translates_through_published_port(project: Project) -> None:
    """`server` alone, waited for healthy; health and a translation from this machine through the
    published port (the server listens on 0.0.0.0 inside the container); Prometheus metrics."""
    project.up("server")
    (server,) = project.ids("server")
    assert inspect(server, "{{.State.Health.Status}}") == "healthy"
    assert inspect(server, "{{.Config.User}}") == "10001:10001"
    assert inspect(server, "{{.Path}} {{.Args}}") == "rnnmt [serve]"  # PID 1: receives SIGTERM itself
    address, metrics_address = project.port("server", 50051), project.port("server", 9100)
    assert address.startswith("127.0.0.1:") and metrics_address.startswith("127.0.0.1:")

    from rnnmt.serving.client import TranslatorClient

    with TranslatorClient(address, timeout=60) as client:
        assert client.health() == "SERVING"
        assert [m.name for m in client.model_info().models] == ["toy"]
    assert translate(address, SOURCE) == EXPECTED
    text = metrics(metrics_address)
    assert any(line.startswith("rnnmt_requests_total{") for line in text.splitlines()), text
    request = urllib.request.Request(
        f"http://{project.port('server', 8080)}/v1/translate",
        data=json.dumps({"texts": [SOURCE]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # the HTTP door, on in the compose file
        assert json.load(response)["translations"][0]["hypotheses"][0]["text"] == EXPECTED
    with urllib.request.urlopen(f"http://{project.port('server', 8080)}/", timeout=60) as response:
        assert b"<title>rnnmt</title>" in response.read()  # the page


def test_batch_service(project: Project) -> None:
    """The `batch` service (run --rm) on a small file, through `rnnmt batch --server server:50051`."""
    project.up("server")
    batch = _batch_dir(project)
    (batch / "input.txt").write_text("".join(f"{line}\n" for line in BATCH_INPUT))
    project("--profile", "batch", "run", "--rm", "batch", timeout=300)
    output = (batch / "output.txt").read_text().splitlines()
    assert len(output) == len(BATCH_INPUT), output
    assert output[0] == EXPECTED


def test_sigterm_clean_exit(project: Project) -> None:
    """`docker compose stop` (SIGTERM) after a call: the server stops gracefully, exit code 0, and its
    whole log is JSON lines."""
    project.up("server")
    (server,) = project.ids("server")
    assert translate(project.port("server", 50051), SOURCE) == EXPECTED
    project("stop", "--timeout", "30", "server", timeout=120)
    assert exit_code(server) == 0, logs(server)[-3000:]
    records = json_log(logs(server))
    assert any(r.get("message") == "stopped" for r in records), "the server did not log its graceful stop"


def test_trainer_then_server_serves_its_model(project: Project, tmp_path: Path) -> None:
    """The trainer service (rnnmt-train-pipeline: Bible corpus, 20 training steps, export) writes the
    `models` volume; the server started on that volume serves the trainer's bible-es-en."""
    config = tmp_path / "ci-tiny.yaml"
    config.write_text(CI_TINY_CONFIG)
    config.chmod(0o644)
    volume = {"RNNMT_MODELS": "models"}  # the named volume instead of the host folder
    start = time.monotonic()
    project(
        "--profile", "train", "run", "--rm", "--no-deps",
        "-e", "RNNMT_TRAIN_CONFIG=configs/ci-tiny.yaml",
        "-v", f"{config}:/work/configs/ci-tiny.yaml:ro",
        "trainer",
        env=volume,
        timeout=900,
    )  # fmt: skip
    print(f"trainer: {time.monotonic() - start:.0f} s")
    project.up("server", env=volume)
    address = project.port("server", 50051, env=volume)

    from rnnmt.serving.client import TranslatorClient

    with TranslatorClient(address, timeout=60) as client:
        assert "bible-es-en" in [m.name for m in client.model_info().models]
    genesis = translate(address, "En el principio crió Dios los cielos y la tierra.")
    print(f"20 training steps translate Genesis 1:1 as: {genesis}")
    assert genesis
    (server,) = project.ids("server")
    project("stop", "--timeout", "30", "server", env=volume, timeout=120)
    assert exit_code(server) == 0


@pytest.fixture
def baked(docker_images: None, models: Path) -> Iterator[tuple[str, str]]:
    """(image, container name) for the serving image with ``models`` baked in; both removed after."""
    image, container = f"rnnmt-serve-models:{unique_name('test')}", unique_name("rnnmt-test-baked")
    try:
        yield image, container
    finally:
        if run(["docker", "container", "inspect", container], check=False).returncode == 0:
            print(f"== logs of {container}\n{logs(container)[-4000:]}")
            run(["docker", "rm", "-f", container], check=False)
        run(["docker", "rmi", image], check=False)


def test_image_with_models_baked_in(baked: tuple[str, str], models: Path) -> None:
    """docker/serve-with-models.Dockerfile, run with a plain `docker run`: healthy by the image's own
    HEALTHCHECK, translates, exit code 0 after `docker stop`."""
    image, container = baked
    dockerfile = str(ROOT / "docker" / "serve-with-models.Dockerfile")
    build = ["docker", "build", "-q", "-f", dockerfile, "--build-arg", f"SERVE_IMAGE={SERVE_IMAGE}"]
    run([*build, "-t", image, str(models)], timeout=600, nice=True)
    run(["docker", "run", "-d", "--name", container, "-p", "127.0.0.1::50051", image])
    wait_healthy(container)
    address = run(["docker", "port", container, "50051"]).stdout.splitlines()[0]
    assert translate(address, SOURCE) == EXPECTED
    run(["docker", "stop", "-t", "30", container], timeout=120)
    assert exit_code(container) == 0


def test_scale_out_behind_lb(project: Project) -> None:
    """Two replicas behind `lb` (docker/compose.scale.yml): calls through lb reach both; the batch
    service's `rnnmt batch --server server:50051` spreads its own calls over both; SIGTERM to all, and
    every container exits with 0."""
    replicas = {"RNNMT_REPLICAS": "2"}
    project.up("server", "lb", scaled=True, env=replicas)
    servers = project.ids("server", scaled=True)
    assert len(servers) == 2, servers
    lb = project("port", "lb", "50051", scaled=True, env=replicas).stdout.strip()

    from rnnmt.serving.client import TranslatorClient

    with TranslatorClient(lb, timeout=60) as client:  # one HTTP/2 connection: lb spreads the calls
        for _ in range(12):
            assert client.translate([SOURCE])[0].hypotheses[0].text == EXPECTED
    through_lb = {server: replica_calls(server, "Translate") for server in servers}
    print(f"Translate calls per replica through lb: {through_lb}")
    assert all(calls >= 1 for calls in through_lb.values()), through_lb

    # 200 lines: 4 requests of the service's --chunk-lines 64 (and its probe), round robin over both.
    batch = _batch_dir(project)
    lines = BATCH_INPUT * 67
    (batch / "input.txt").write_text("".join(f"{line}\n" for line in lines[:200]))
    project("--profile", "batch", "run", "--rm", "batch", scaled=True, env=replicas, timeout=300)
    output = (batch / "output.txt").read_text().splitlines()
    assert len(output) == 200 and output[0] == EXPECTED
    from_batch = {server: replica_calls(server, "Translate") - through_lb[server] for server in servers}
    print(f"Translate calls per replica from rnnmt batch: {from_batch}")
    assert all(calls >= 1 for calls in from_batch.values()), from_batch

    project("stop", "--timeout", "30", "server", "lb", scaled=True, env=replicas, timeout=180)
    for container in [*servers, *project.ids("lb", scaled=True, stopped=True)]:
        assert exit_code(container) == 0, f"{container[:12]} exited with {exit_code(container)}"
