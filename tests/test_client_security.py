"""The TLS / mutual TLS and bearer-token flags of the commands that call a server: `rnnmt health`,
`rnnmt translate` and `rnnmt batch --server`, run as processes against a real TLS server with tokens."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import RNNMT, ServerThread, running

TEXTS = ["El perro come pan.", "Un gato bebe agua.", "El niño ve pan."]
EXPECTED = ["The dog eats bread.", "A cat drinks water.", "The boy sees bread."]
TOKEN = "secret-token"


@pytest.fixture(scope="module", params=["tls", "mutual-tls"])
def secure_server(
    request: pytest.FixtureRequest,
    model_dir: Path,
    certificates: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerThread, list[str]]]:
    """A server with TLS (and client certificates with ``mutual-tls``) that wants a bearer token, and
    the flags a command needs to reach it (the token aside)."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    settings: dict[str, object] = {
        "tls_cert": certificates / "server.pem",
        "tls_key": certificates / "server.key",
        "auth_token_file": tokens,
    }
    flags = ["--tls-ca", str(certificates / "ca.pem")]
    if request.param == "mutual-tls":
        settings["tls_client_ca"] = certificates / "ca.pem"
        flags += [
            "--tls-cert",
            str(certificates / "client.pem"),
            "--tls-key",
            str(certificates / "client.key"),
        ]
    with running(model_dir, workers=1, **settings) as server:
        yield server, flags


def rnnmt(*args: str) -> subprocess.CompletedProcess[str]:
    """`rnnmt ARGS` as a process, without any RNNMT_* settings of this environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RNNMT_")}
    return subprocess.run(
        [str(RNNMT), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_health_speaks_tls_without_a_token(secure_server: tuple[ServerThread, list[str]]) -> None:
    server, flags = secure_server
    address = ["--server", f"localhost:{server.port}", "--timeout", "10"]
    done = rnnmt("health", *address, *flags)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SERVING"
    plaintext = rnnmt("health", *address)
    assert plaintext.returncode == 2
    assert plaintext.stderr.startswith("rnnmt: error: ") and "UNAVAILABLE" in plaintext.stderr
    if "--tls-cert" in flags:  # mutual TLS: the server refuses a client without a certificate
        assert rnnmt("health", *address, *flags[:2]).returncode == 2


def test_batch_and_translate_send_tls_and_token(
    secure_server: tuple[ServerThread, list[str]], tmp_path: Path
) -> None:
    server, flags = secure_server
    address = ["--server", f"localhost:{server.port}"]
    source = tmp_path / "in.es"
    source.write_text("".join(f"{text}\n" for text in TEXTS))
    out = tmp_path / "out.en"
    done = rnnmt("batch", str(source), "--out", str(out), *address, *flags, "--auth-token", TOKEN)
    assert done.returncode == 0, done.stderr
    assert out.read_text().splitlines() == EXPECTED

    (tmp_path / "token").write_text(f"{TOKEN}\n")
    token_file = ["--auth-token-file", str(tmp_path / "token")]
    done = rnnmt("translate", *address, *flags, *token_file, *TEXTS[:1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == EXPECTED[:1]

    refused = rnnmt("batch", str(source), "--out", str(tmp_path / "refused.en"), *address, *flags)
    assert refused.returncode == 2
    assert refused.stderr.startswith("rnnmt: error: ") and "UNAUTHENTICATED" in refused.stderr
