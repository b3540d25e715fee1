"""Export to a model package: the self-check, the manifest, and refusing damaged packages.

The checkpoints are tiny models of each variant trained by `rnnmt train` on the toy corpus (conftest).
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import VARIANTS
from servers import RNNMT

import rnnmt
from rnnmt.cli import main
from rnnmt.errors import RnnmtError
from rnnmt.serving.core.package import FORMAT, load_package
from rnnmt.training.checkpoint import load_model
from rnnmt.training.export import TOLERANCE, export_package, json_safe, measure_graphs
from rnnmt.training.quantize import quantize_decoder


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def checkpoint(request: pytest.FixtureRequest, variant_checkpoint: Callable[[str], Path]) -> Path:
    return variant_checkpoint(request.param)


@pytest.fixture(scope="module")
def package(checkpoint: Path) -> Path:
    return export_package(checkpoint, checkpoint.parent / "package", max_input_tokens=40)


def test_export_checks_itself_and_writes_a_complete_manifest(
    request: pytest.FixtureRequest, checkpoint: Path, package: Path
) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["format"] == FORMAT
    assert manifest["rnnmt_version"] == rnnmt.__version__
    # The self-check's numbers are what measuring the written graphs gives, not just under the tolerance
    # (the export refuses to write a package otherwise).
    measured = measure_graphs(
        load_model(checkpoint).model, package / "encoder.onnx", package / "decoder.onnx"
    )
    assert manifest["verification"] == {
        "tolerance": TOLERANCE,
        "encoder_max_abs_diff": measured["encoder"],
        "decoder_max_abs_diff": measured["decoder"],
    }
    assert manifest["training"]["step"] == load_model(checkpoint).meta["step"]
    assert manifest["training"]["dev_bleu"] == pytest.approx(100.0)
    assert manifest["training"]["src_lang"] == "es" and manifest["source_language"] == "es"
    assert manifest["max_input_tokens"] == 40
    assert manifest["quantization"] is None
    assert manifest["evaluation"] == {}
    feeding = manifest["model"]["input_feeding"]
    assert manifest["decoder_state"] == ["state_h", "state_c"] + (["state_feed"] if feeding else [])
    joint = VARIANTS[request.node.callspec.params["checkpoint"]]["tokenizer"]["joint"]
    spm_files = {"joint.spm"} if joint else {"source.spm", "target.spm"}
    assert manifest["tokenizers"] == {"source": min(spm_files), "target": max(spm_files)}
    assert set(manifest["files"]) == {"encoder.onnx", "decoder.onnx"} | spm_files
    assert {p.name for p in package.iterdir()} == {
        "manifest.json",
        "encoder.onnx",
        "decoder.onnx",
    } | spm_files
    assert not [p for p in package.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = load_package(package)
    assert loaded.manifest.decoder_state == manifest["decoder_state"]
    assert loaded.source_tokenizer_path.is_file() and loaded.target_tokenizer_path.is_file()


def test_only_json_values_of_the_checkpoint_meta_reach_the_manifest() -> None:
    assert json_safe({"step": 3, "loss": float("nan"), "weights": torch.zeros(1), "bleu": 1.5}) == {
        "step": 3,
        "bleu": 1.5,
    }


def test_self_check_catches_a_decoder_that_differs(checkpoint: Path, package: Path, tmp_path: Path) -> None:
    model = load_model(checkpoint).model
    decoder = tmp_path / "decoder.onnx"
    shutil.copy(package / "decoder.onnx", decoder)
    assert measure_graphs(model, package / "encoder.onnx", decoder)["decoder"] <= TOLERANCE
    quantize_decoder(decoder)
    assert measure_graphs(model, package / "encoder.onnx", decoder)["decoder"] > TOLERANCE


def test_export_refuses_a_non_empty_target_and_unknown_quantization(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(RnnmtError, match="not an empty directory"):
        export_package(checkpoint, tmp_path / "taken")
    with pytest.raises(RnnmtError, match="quantize"):
        export_package(checkpoint, tmp_path / "new", quantize="int4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def copy_package(package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(package, tmp_path / "copy"))


def test_evaluate_records_the_package_scores_in_its_manifest(
    checkpoint: Path, package: Path, toy_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = copy_package(package, tmp_path)
    files = load_package(copy).manifest.files
    data = ["--source", str(toy_data / "dev.es"), "--reference", str(toy_data / "dev.en"), "--beam-size", "3"]
    assert main(["evaluate", str(copy), *data, "--record", "test"]) == 0
    assert "BLEU 100.00" in capsys.readouterr().out
    manifest = load_package(copy).manifest
    record = manifest.evaluation["test"]
    assert record["bleu"] == 100.0 and record["source"] == "dev.es"
    assert record["sentences"] == len((toy_data / "dev.es").read_text().splitlines())
    assert record["decoding"]["beam_size"] == 3 and record["bleu_signature"].startswith("nrefs:1")
    assert record["length_ratio"] == 1.0 and record["short"] == 0.0
    assert manifest.files == files
    assert main(["evaluate", str(checkpoint), *data, "--record", "test"]) == 2
    assert "--record needs a model package" in capsys.readouterr().err


def test_tampered_file_is_refused(package: Path, tmp_path: Path) -> None:
    copy = copy_package(package, tmp_path)
    data = bytearray((copy / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(RnnmtError, match=r"decoder\.onnx does not match its sha256"):
        load_package(copy)


def test_truncated_file_is_refused(package: Path, tmp_path: Path) -> None:
    copy = copy_package(package, tmp_path)
    data = (copy / "encoder.onnx").read_bytes()
    (copy / "encoder.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(RnnmtError, match=r"encoder\.onnx has \d+ bytes .* truncated"):
        load_package(copy)


def test_missing_file_is_refused(package: Path, tmp_path: Path) -> None:
    copy = copy_package(package, tmp_path)
    (copy / "encoder.onnx").unlink()
    with pytest.raises(RnnmtError, match=r"missing encoder\.onnx"):
        load_package(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 99}, "format version 99"),
        ({"format": "something-else"}, "not an rnnmt model package"),
        ({"special_ids": {"pad": 1}}, "special ids"),
        ({"opset": "17"}, "'opset' has the wrong type"),
        ({"files": {}}, "does not list file"),
    ],
)
def test_incompatible_manifest_is_refused(
    package: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    copy = copy_package(package, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text()) | change
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RnnmtError, match=message):
        load_package(copy)


def test_truncated_or_missing_manifest_is_refused(package: Path, tmp_path: Path) -> None:
    copy = copy_package(package, tmp_path)
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(RnnmtError, match=r"manifest\.json is not valid JSON"):
        load_package(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(RnnmtError, match=r"manifest\.json is missing"):
        load_package(copy)
    with pytest.raises(RnnmtError, match="not a directory"):
        load_package(tmp_path / "nowhere")


def test_export_of_a_corrupt_or_foreign_checkpoint_says_so_and_never_advises_unsafe_loading(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    files = {
        "truncated.pt": tiny_checkpoint.read_bytes()[:5000],
        "random.pt": random.Random(0).randbytes(4096),
        "pickled-object.pt": pickle.dumps(Path("not a checkpoint"), protocol=4),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out = tmp_path / f"{name}.package"
        done = subprocess.run(
            [str(RNNMT), "export", str(tmp_path / name), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"rnnmt: error: {tmp_path / name} ")
        assert "corrupt" in done.stderr and "not an rnnmt checkpoint" in done.stderr
        assert "weights_only" not in done.stderr
        assert not out.exists()
