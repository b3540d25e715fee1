"""LibreTranslate's clients from PyPI (libretranslatepy) and npm (libretranslate), unchanged, against a
real `rnnmt serve` process with both shipped models."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from libretranslatepy import LibreTranslateAPI
from servers import start_server_process

REPO = Path(__file__).resolve().parents[1]
CLIENTS = Path(__file__).parent / "clients"
KEY = "client-key"
SPANISH = "En el principio crió Dios los cielos y la tierra. Y la tierra estaba desadornada y vacía."


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of both shipped models with a token, its HTTP door's address."""
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text(KEY)
    server = start_server_process(
        "--model-dir", str(REPO / "models"), "--workers", "1", "--http-port", "0",
        "--auth-token-file", str(token), "--allow-insecure-token",
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{server.http_port}"
    finally:
        server.process.terminate()
        assert server.process.wait(timeout=30) == 0


def test_the_python_client(url: str) -> None:
    client = LibreTranslateAPI(url, api_key=KEY)
    assert {(entry["code"], tuple(entry["targets"])) for entry in client.languages()} == {
        ("en", ("es",)),
        ("es", ("en",)),
    }
    english = client.translate(SPANISH, "es", "en")
    assert english.count(".") == 2 and english.startswith("In the beginning")  # both sentences
    assert client.translate(SPANISH, "auto", "en") == english
    assert client.detect(SPANISH)[0]["language"] == "es"
    assert client.detect("And God said, Let there be light: and there was light.")[0]["language"] == "en"


def test_the_python_client_without_the_key_is_refused(url: str) -> None:
    with pytest.raises(Exception, match="403"):
        LibreTranslateAPI(url).translate(SPANISH, "es", "en")


def test_the_npm_client(url: str) -> None:
    """The npm client sends its key as ``apiKey`` (LibreTranslate reads ``api_key``): it works against a
    server without tokens, as against LibreTranslate."""
    node = shutil.which("node")
    assert node is not None and (CLIENTS / "node_modules" / "libretranslate").is_dir(), (
        "run scripts/install.sh"
    )
    server = start_server_process("--model-dir", str(REPO / "models"), "--workers", "1", "--http-port", "0")
    try:
        done = subprocess.run(
            [node, str(CLIENTS / "translate.js"), f"http://127.0.0.1:{server.http_port}", SPANISH],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        server.process.terminate()
        assert server.process.wait(timeout=30) == 0
    assert done.returncode == 0, done.stderr
    english = json.loads(done.stdout)
    assert english == LibreTranslateAPI(url, api_key=KEY).translate(SPANISH, "es", "en")
