"""Model packages: what `rnnmt export` writes and the server and batch jobs load, verified before use.

A package holds ``encoder.onnx``, ``decoder.onnx`` (one decoder step), the SentencePiece model(s) and
``manifest.json``. The manifest records the format, the model and tokenizer facts the engine needs, how
the export was checked, and the sha256 and size of every other file, so a missing, truncated, tampered
or incompatible package is refused with a message naming the file instead of failing later in
onnxruntime.

Graph interface (``R`` rows, ``N`` sentences, ``S`` source length):

- encoder: ``src [N,S] int64``, ``src_lengths [N] int64`` → the memory ``states``, ``keys``, ``mask`` and
  the initial decoder state, one output per name of ``Manifest.decoder_state`` (``state_h``, ...).
- decoder: ``prev [R] int64``, the memory, the state, ``beam_scores [R]``, ``eos_bias [R]``, ``k`` (scalar
  int64) → ``topk_scores [R,k]``, ``topk_ids [R,k]`` and the next state as ``next_<state name>``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from rnnmt.errors import RnnmtError
from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID, UNK_ID

FORMAT = "rnnmt-onnx-package"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SPECIAL_IDS = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}
QUANTIZATIONS = (None, "int8", "int8-weights", "int8-rows")

ENCODER_INPUTS = ("src", "src_lengths")
MEMORY_NAMES = ("states", "keys", "mask")
STEP_INPUTS = ("prev", "beam_scores", "eos_bias", "k")
STEP_OUTPUTS = ("topk_scores", "topk_ids")
NEXT_PREFIX = "next_"


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json``. Dict-valued fields are kept as written (informational)."""

    format: str
    format_version: int
    rnnmt_version: str
    source_language: str
    target_language: str
    model: dict[str, Any]  # the ModelConfig of the checkpoint
    special_ids: dict[str, int]
    source_vocab_size: int
    target_vocab_size: int
    tokenizers: dict[str, str]  # "source" / "target" → file name (the same file when joint)
    decoder_state: list[str]  # encoder state outputs = decoder state inputs, in order
    opset: int
    # None, "int8" (dynamic, decoder step) or "int8-weights" (int8-stored weights; see training/export.py)
    quantization: str | None
    max_input_tokens: int  # source pieces per sentence, EOS not counted
    decoding: dict[str, Any]  # default SearchOptions fields
    verification: dict[str, Any]  # the export's self-check: tolerance and measured differences
    training: dict[str, Any]  # the checkpoint's metadata (data, steps, minutes, dev scores) as far as present
    evaluation: dict[str, Any]  # scores of this package by `rnnmt evaluate --record NAME`: NAME → record
    # Every file but the manifest: name → {"sha256": hex digest, "bytes": size}.
    files: dict[str, dict[str, Any]]

    def to_json(self) -> str:
        return json.dumps(
            {f.name: getattr(self, f.name) for f in fields(self)},
            indent=2,
            ensure_ascii=False,
            allow_nan=False,
        )


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "rnnmt_version": str,
    "source_language": str,
    "target_language": str,
    "model": dict,
    "special_ids": dict,
    "source_vocab_size": int,
    "target_vocab_size": int,
    "tokenizers": dict,
    "decoder_state": list,
    "opset": int,
    "quantization": (str, type(None)),
    "max_input_tokens": int,
    "decoding": dict,
    "verification": dict,
    "training": dict,
    "evaluation": dict,
    "files": dict,
}


@dataclass(frozen=True)
class ModelPackage:
    """A verified package directory."""

    root: Path
    manifest: Manifest
    version: str  # the content version: the first 16 hex digits of the manifest file's sha256

    @property
    def encoder_path(self) -> Path:
        return self.root / ENCODER_FILE

    @property
    def decoder_path(self) -> Path:
        return self.root / DECODER_FILE

    @property
    def source_tokenizer_path(self) -> Path:
        return self.root / self.manifest.tokenizers["source"]

    @property
    def target_tokenizer_path(self) -> Path:
        return self.root / self.manifest.tokenizers["target"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """The manifest entry of one file."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def parse_manifest(values: Any, where: str) -> Manifest:
    """Check the format first (so a newer package says so), then every field's presence and type."""
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise RnnmtError(f"{where} is not an rnnmt model package manifest (format must be {FORMAT!r})")
    if values.get("format_version") != FORMAT_VERSION:
        raise RnnmtError(
            f"{where} has package format version {values.get('format_version')!r}; this rnnmt "
            f"reads version {FORMAT_VERSION}: re-export the checkpoint with this rnnmt"
        )
    for name, kind in _FIELD_TYPES.items():
        if name not in values:
            raise RnnmtError(f"{where} is incomplete: field {name!r} is missing")
        if not isinstance(values[name], kind) or isinstance(values[name], bool):
            raise RnnmtError(f"{where}: field {name!r} has the wrong type ({values[name]!r})")
    unknown = sorted(set(values) - set(_FIELD_TYPES))
    if unknown:
        raise RnnmtError(f"{where} has unknown field(s) {', '.join(unknown)}")
    manifest = Manifest(**values)
    if set(manifest.tokenizers) != {"source", "target"} or not all(
        isinstance(name, str) for name in manifest.tokenizers.values()
    ):
        raise RnnmtError(f"{where}: 'tokenizers' must name a 'source' and a 'target' file")
    if manifest.special_ids != SPECIAL_IDS:
        raise RnnmtError(f"{where}: special ids {manifest.special_ids} are not rnnmt's {SPECIAL_IDS}")
    if manifest.quantization not in QUANTIZATIONS:
        raise RnnmtError(f"{where}: unknown quantization {manifest.quantization!r}")
    needed = {ENCODER_FILE, DECODER_FILE, *manifest.tokenizers.values()}
    missing = sorted(needed - set(manifest.files))
    if missing:
        raise RnnmtError(f"{where} does not list file(s) {', '.join(missing)}")
    return manifest


def verify_file(root: Path, name: str, record: Any) -> None:
    """Refuse a listed file that is missing, of the wrong size or with the wrong sha256."""
    if Path(name).name != name or name in ("", ".", "..", MANIFEST_FILE):
        raise RnnmtError(f"{root / MANIFEST_FILE} lists an invalid file name {name!r}")
    if not isinstance(record, dict) or not {"sha256", "bytes"} <= set(record):
        raise RnnmtError(f"{root / MANIFEST_FILE}: the entry of {name} needs 'sha256' and 'bytes'")
    path = root / name
    if not path.is_file():
        raise RnnmtError(f"model package {root} is missing {name}")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise RnnmtError(
            f"{path} has {size} bytes but the manifest says {record['bytes']}: the file is truncated or "
            "replaced; copy the package again"
        )
    if sha256_file(path) != record["sha256"]:
        raise RnnmtError(
            f"{path} does not match its sha256 in the manifest: the file was modified or damaged"
        )


def find_packages(model_dir: Path) -> dict[str, Path]:
    """Model name → package folder, sorted by name; an :class:`RnnmtError` if there is none.

    ``model_dir`` is a *model repository*, one package folder per model named after the model (hidden
    folders skipped), or itself a package (it holds ``manifest.json``), named after its folder. The
    folders are not verified here: :func:`load_package` does that.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RnnmtError(f"model directory not found: {model_dir}")
    if (model_dir / MANIFEST_FILE).is_file():
        return {model_dir.resolve().name: model_dir}
    found = {p.name: p for p in sorted(model_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not found:
        raise RnnmtError(f"{model_dir} holds no model package (folders with {MANIFEST_FILE})")
    return found


def load_package(root: Path) -> ModelPackage:
    """Read and verify a package directory; any problem is an :class:`RnnmtError` naming the file."""
    root = Path(root)
    manifest_path = root / MANIFEST_FILE
    if not root.is_dir():
        raise RnnmtError(f"model package not found: {root} is not a directory")
    if not manifest_path.is_file():
        raise RnnmtError(f"{root} is not a model package: {MANIFEST_FILE} is missing")
    data = manifest_path.read_bytes()
    try:
        values = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RnnmtError(f"{manifest_path} is not valid JSON (truncated or damaged?): {exc}") from exc
    manifest = parse_manifest(values, str(manifest_path))
    for name, record in manifest.files.items():
        verify_file(root, name, record)
    return ModelPackage(root, manifest, hashlib.sha256(data).hexdigest()[:16])


def record_evaluation(root: Path, name: str, record: dict[str, Any]) -> Manifest:
    """Verify the package at ``root``, then store ``record`` as its evaluation ``name`` (replacing an
    earlier one of that name). The manifest is replaced atomically; no other file changes."""
    package = load_package(root)
    evaluation = {**package.manifest.evaluation, name: record}
    manifest = replace(package.manifest, evaluation=evaluation)
    temporary = package.root / f".{MANIFEST_FILE}.tmp"
    temporary.write_text(manifest.to_json() + "\n", encoding="utf-8")
    os.replace(temporary, package.root / MANIFEST_FILE)
    return manifest
