"""Loading a package loads the bytes that were verified: a file replaced on disk between its check and its
load is never served (the replacement is made at that point by construction, not by timing), and a graph
whose tensors would come from an ONNX external data file is refused."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import toy_pairs
from onnx import numpy_helper
from sentencepiece import sentencepiece_model_pb2

from rnnmt.errors import RnnmtError
from rnnmt.serving.core import package as package_module
from rnnmt.serving.core.package import DECODER_FILE, ENCODER_FILE, SHORTLIST_FILE, load_package
from rnnmt.serving.core.shortlist import Shortlist
from rnnmt.serving.core.signing import TrustedKeys, new_key, sign_package
from rnnmt.serving.core.translator import Translator
from rnnmt.training.export import export_package

SOURCES = [p.src for p in toy_pairs()]
TOKENIZER_FILE = "joint.spm"  # the tiny model's joint vocabulary


@pytest.fixture(scope="module")
def signed(tiny_checkpoint: Path, toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a shortlist (a package with every kind of file), signed; the public key is
    ``key.pub`` beside it."""
    root = tmp_path_factory.mktemp("loading")
    package = export_package(
        tiny_checkpoint, root / "toy", shortlist_corpus=toy_data / "train", shortlist_size=32
    )
    new_key(root / "key")
    sign_package(package, root / "key")
    return package


def trusted(package: Path) -> TrustedKeys:
    return TrustedKeys.load(package.with_name("key.pub"))


def translations(translator: Translator) -> list[str]:
    return [hyps[0].text for hyps in translator.translate(SOURCES, translator.default_options)]


def negated(graph: bytes, _scratch: Path) -> bytes:
    """The ONNX model ``graph`` with every float initializer negated: the same interface, other outputs."""
    model = onnx.load_from_string(graph)
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(tensor), tensor.name))
    return model.SerializeToString()


def respelled(model_proto: bytes, _scratch: Path) -> bytes:
    """The SentencePiece model with the spellings of its normal pieces in reverse order: as many pieces
    and the same special ids, but other ids for the same text."""
    model = sentencepiece_model_pb2.ModelProto.FromString(model_proto)
    normal = [p for p in model.pieces if p.type == sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL]
    for piece, spelling in zip(normal, [p.piece for p in normal][::-1], strict=True):
        piece.piece = spelling
    return model.SerializeToString()


def unhelpful(table: bytes, scratch: Path) -> bytes:
    """A valid shortlist of the same vocabularies whose sets hold the rarest pieces, and no lexical ones."""
    with np.load(io.BytesIO(table)) as arrays:
        lexical, frequent, size = (
            np.full_like(arrays["lexical"], -1),
            arrays["frequent"][::-1],
            int(arrays["size"]),
        )
    Shortlist(lexical, frequent, 0, size).save(scratch / SHORTLIST_FILE)
    return (scratch / SHORTLIST_FILE).read_bytes()


REPLACEMENTS: dict[str, Callable[[bytes, Path], bytes]] = {
    ENCODER_FILE: negated,
    DECODER_FILE: negated,
    TOKENIZER_FILE: respelled,
    SHORTLIST_FILE: unhelpful,
}


def rehash(package: Path, *names: str) -> None:
    """List ``names`` in the manifest with their current checksums (a deliberate edit; unsigned)."""
    manifest = json.loads((package / "manifest.json").read_text())
    for name in names:
        data = (package / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (package / "manifest.json").write_text(json.dumps(manifest))
    (package / "manifest.sig").unlink(missing_ok=True)


@pytest.mark.parametrize("name", list(REPLACEMENTS))
def test_a_file_replaced_right_after_its_check_is_not_what_gets_loaded(
    signed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    package = Path(shutil.copytree(signed, tmp_path / "toy"))
    expected = translations(Translator.from_package(package, threads=1))
    replacement = REPLACEMENTS[name]((package / name).read_bytes(), tmp_path)
    # The replacement is a working file that translates otherwise, were it loaded.
    other = Path(shutil.copytree(signed, tmp_path / "other"))
    (other / name).write_bytes(replacement)
    rehash(other, name)
    assert translations(Translator.from_package(other, threads=1)) != expected

    verify_file = package_module.verify_file
    replaced: list[str] = []

    def verify_then_replace(root: Path, file: str, record: object) -> object:
        checked = verify_file(root, file, record)
        if file == name:  # checked: now the file on disk changes, before anything loads it
            (root / file).write_bytes(replacement)
            replaced.append(file)
        return checked

    monkeypatch.setattr(package_module, "verify_file", verify_then_replace)
    translator = Translator.from_package(package, threads=1, trusted_keys=trusted(signed))
    assert replaced == [name] and (package / name).read_bytes() == replacement
    assert translator.package is not None and translator.package.signed_by
    assert translations(translator) == expected  # the verified file is served, not the one on disk now


def with_external_data(package: Path) -> Path:
    """Store the decoder's tensors in ``decoder.onnx.data`` beside it (ONNX external data)."""
    model = onnx.load(str(package / DECODER_FILE))
    onnx.save(model, str(package / DECODER_FILE), save_as_external_data=True, location="decoder.onnx.data")
    return package / "decoder.onnx.data"


def test_a_graph_with_external_data_is_refused_listed_or_not(
    signed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = Path(shutil.copytree(signed, tmp_path / "toy"))
    data = with_external_data(package)
    rehash(package, DECODER_FILE, data.name)
    with pytest.raises(RnnmtError, match=r"lists file\(s\) decoder\.onnx\.data, .*external data"):
        load_package(package)
    # Listed as a package file only, its tensors would be read from a file no check covers (from the
    # working directory, loading from bytes): refused too, wherever the process runs.
    rehash(package, DECODER_FILE)
    manifest = json.loads((package / "manifest.json").read_text())
    del manifest["files"][data.name]
    (package / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(package)
    with pytest.raises(
        RnnmtError, match=r"cannot load .*decoder\.onnx \(ONNX external data is not supported\)"
    ):
        Translator.from_package(package, threads=1)
