"""Signed model packages: keys, signing at export and afterwards, and a server that serves only packages
signed by keys it trusts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import stat
from pathlib import Path

import pytest
from servers import running

from rnnmt.cli import main
from rnnmt.errors import RnnmtError
from rnnmt.serving.client import TranslatorClient
from rnnmt.serving.core import package as package_module
from rnnmt.serving.core.signing import SIGNATURE_FILE, TrustedKeys, key_id, load_public_key, sign_package
from rnnmt.serving.core.translator import Translator
from rnnmt.serving.server.app import TranslationServer
from rnnmt.serving.server.config import ServerConfig


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two key pairs made by `rnnmt keys new`: ours and a stranger's (private key paths)."""
    folder = tmp_path_factory.mktemp("keys")
    for name in ("ours", "stranger"):
        assert main(["keys", "new", str(folder / name)]) == 0
    return {name: folder / name for name in ("ours", "stranger")}


@pytest.fixture
def package(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir / "toy", tmp_path / "toy"))


def trusted(keys: dict[str, Path]) -> TrustedKeys:
    return TrustedKeys.load(keys["ours"].with_name("ours.pub"))


def test_new_keys_are_private_and_never_overwritten(
    keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert stat.S_IMODE(keys["ours"].stat().st_mode) == 0o600
    assert main(["keys", "new", str(keys["ours"])]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_package_signed_by_a_trusted_key_is_served_and_says_by_whom(
    package: Path, keys: dict[str, Path]
) -> None:
    assert main(["sign", str(package), "--key", str(keys["ours"])]) == 0
    ours = key_id(load_public_key(keys["ours"].with_name("ours.pub")))
    assert Translator.from_package(package, trusted_keys=trusted(keys)).package.signed_by == ours
    pub = keys["ours"].with_name("ours.pub")
    with running(package, workers=1, trusted_keys=pub) as s, TranslatorClient(s.target) as c:
        assert c.model_info().models[0].signed_by == ours
        assert c.translate(["El perro come pan."])[0].hypotheses[0].text == "The dog eats bread."


def test_unsigned_stranger_signed_and_edited_packages_are_refused(
    package: Path, keys: dict[str, Path]
) -> None:
    with pytest.raises(RnnmtError, match=f"is not signed \\({SIGNATURE_FILE} is missing\\)"):
        Translator.from_package(package, trusted_keys=trusted(keys))
    main(["sign", str(package), "--key", str(keys["stranger"])])
    with pytest.raises(
        RnnmtError, match=r"is signed by key [0-9a-f]{16}, which is not among the trusted keys"
    ):
        Translator.from_package(package, trusted_keys=trusted(keys))

    main(["sign", str(package), "--key", str(keys["ours"])])
    decoder = package / "decoder.onnx"
    data = bytearray(decoder.read_bytes())
    data[-1] ^= 0x01
    decoder.write_bytes(bytes(data))
    with pytest.raises(RnnmtError, match=r"decoder\.onnx does not match its sha256"):  # damage
        Translator.from_package(package, trusted_keys=trusted(keys))
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["files"]["decoder.onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    (package / "manifest.json").write_text(json.dumps(manifest, indent=2))  # a deliberate edit
    with pytest.raises(
        RnnmtError, match="does not match its manifest: the package was changed after it was signed"
    ):
        Translator.from_package(package, trusted_keys=trusted(keys))
    assert Translator.from_package(package).package.signed_by is None  # without trusted keys: served


def test_a_server_with_trusted_keys_does_not_start_on_an_unsigned_package(
    package: Path, keys: dict[str, Path]
) -> None:
    server = TranslationServer(
        ServerConfig(model_dir=package, port=0, trusted_keys=keys["ours"].with_name("ours.pub"))
    )
    with pytest.raises(RnnmtError, match="is not signed"):
        asyncio.run(server.start())


def test_export_signs_with_a_checked_key(
    tiny_checkpoint: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    assert (
        main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "p"), "--sign", str(keys["ours"])]) == 0
    )
    assert Translator.from_package(tmp_path / "p", trusted_keys=trusted(keys)).package.signed_by
    (tmp_path / "bad.key").write_text("not a key")
    assert (
        main(
            [
                "export",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path / "q"),
                "--sign",
                str(tmp_path / "bad.key"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "q").exists()


def test_the_manifest_signed_is_the_manifest_verified(
    package: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest replaced once the package was verified (right after its last file's check, by
    construction) is not what gets signed."""
    verified = (package / "manifest.json").read_bytes()
    last = list(json.loads(verified)["files"])[-1]
    verify_file = package_module.verify_file

    def verify_then_replace(root: Path, name: str, record: object) -> object:
        checked = verify_file(root, name, record)
        if name == last:
            (root / "manifest.json").write_bytes(verified + b" ")  # other bytes, the same package
        return checked

    monkeypatch.setattr(package_module, "verify_file", verify_then_replace)
    signer = sign_package(package, keys["ours"])
    assert trusted(keys).verify(package, verified) == signer
