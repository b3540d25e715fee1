"""Model packages: what `rnnmt export` writes and the server and batch jobs load, verified before use.

A package holds ``encoder.onnx``, ``decoder.onnx`` (one decoder step), the SentencePiece model(s),
optionally a lexical shortlist (``shortlist.npz``, see :mod:`rnnmt.serving.core.shortlist`) and
``manifest.json``. The manifest records the format, the model and tokenizer facts the engine needs, how
the export was checked, and the sha256 and size of every other file, so a missing, truncated, tampered
or incompatible package is refused with a message naming the file instead of failing later in
onnxruntime. Each file is read once (:func:`read_package`): its checks and its loader see the same bytes.

Graph interface (``R`` rows, ``N`` sentences, ``S`` source length):

- encoder: ``src [N,S] int64``, ``src_lengths [N] int64`` → the memory ``states``, ``keys``, ``mask`` and
  the initial decoder state, one output per name of ``Manifest.decoder_state`` (``state_h``, ...).
- decoder: ``prev [R] int64``, the memory, the state, ``beam_scores [R]``, ``eos_bias [R]``, ``k`` (scalar
  int64) → ``topk_scores [R,k]``, ``topk_ids [R,k]`` and the next state as ``next_<state name>``.
  With a shortlist it also takes ``positions [R,L] int64`` (each row's set as positions in ``vocab``)
  and ``vocab [C] int64`` (the batch's union of sets, sorted), and normalises each row over its own
  ``L`` pieces.

Format versions: 1 has no shortlist; 2 adds the ``shortlist`` field (written only for packages with one,
so that a package without it stays readable by older rnnmt). Both are read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnmt.errors import RnnmtError
from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID, UNK_ID

if TYPE_CHECKING:
    from rnnmt.serving.core.signing import TrustedKeys

FORMAT = "rnnmt-onnx-package"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
ATTENTION_VERSION = 3
"""The first format whose decoder step also outputs its attention weights (:data:`ATTENTION_OUTPUT`)."""
SHORTLIST_FILE = "shortlist.npz"
MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SPECIAL_IDS = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}
QUANTIZATIONS = (None, "int8", "int8-weights", "int8-rows")

ENCODER_INPUTS = ("src", "src_lengths")
MEMORY_NAMES = ("states", "keys", "mask")
STEP_INPUTS = ("prev", "beam_scores", "eos_bias", "k")
STEP_OUTPUTS = ("topk_scores", "topk_ids")
SHORTLIST_INPUTS = ("positions", "vocab")
NEXT_PREFIX = "next_"
ATTENTION_OUTPUT = "attention"
"""Format 3: the decoder step's attention weights over the source, [R,1,S], each row summing to 1."""


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
    # None, "int8" (dynamic, decoder step), "int8-weights" (int8-stored weights) or "int8-rows" (per-row int8
    # decoder step, other weights int8-stored); one of QUANTIZATIONS, see training/export.py
    quantization: str | None
    max_input_tokens: int  # source pieces per sentence, EOS not counted
    decoding: dict[str, Any]  # default SearchOptions fields
    verification: dict[str, Any]  # the export's self-check: tolerance and measured differences
    training: dict[str, Any]  # the checkpoint's metadata (data, steps, minutes, dev scores) as far as present
    evaluation: dict[str, Any]  # scores of this package by `rnnmt evaluate --record NAME`: NAME → record
    # Every file but the manifest: name → {"sha256": hex digest, "bytes": size}.
    files: dict[str, dict[str, Any]]
    # Format 2: {"file": SHORTLIST_FILE, "size": L, ...how it was built and its coverage}, or None.
    shortlist: dict[str, Any] | None = None

    @property
    def has_attention(self) -> bool:
        """Whether the decoder step outputs its attention weights (:data:`ATTENTION_OUTPUT`)."""
        return self.format_version >= ATTENTION_VERSION

    def to_json(self) -> str:
        names = [f.name for f in fields(self) if f.name != "shortlist" or self.format_version >= 2]
        return json.dumps(
            {name: getattr(self, name) for name in names},
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
_FIELD_TYPES_2: dict[str, type | tuple[type, ...]] = {**_FIELD_TYPES, "shortlist": (dict, type(None))}


@dataclass(frozen=True)
class ModelPackage:
    """A verified package directory."""

    root: Path
    manifest: Manifest
    version: str  # the content version: the first 16 hex digits of the manifest file's sha256
    signed_by: str | None = None  # the id of the trusted key whose signature was checked, if one was

    @property
    def encoder_path(self) -> Path:
        return self.root / ENCODER_FILE

    @property
    def decoder_path(self) -> Path:
        return self.root / DECODER_FILE

    @property
    def shortlist_path(self) -> Path | None:
        return self.root / SHORTLIST_FILE if self.manifest.shortlist is not None else None

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


def _field_types(values: Any, where: str) -> dict[str, type | tuple[type, ...]]:
    """The fields of the manifest's format version, once its format and version are known to be read."""
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise RnnmtError(f"{where} is not an rnnmt model package manifest (format must be {FORMAT!r})")
    version = values.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise RnnmtError(
            f"{where} has package format version {version!r}; this rnnmt reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: re-export the checkpoint with this rnnmt"
        )
    return _FIELD_TYPES_2 if version >= 2 else _FIELD_TYPES


def parse_manifest(values: Any, where: str) -> Manifest:
    """Check the format first (so a newer package says so), then every field's presence and type."""
    field_types = _field_types(values, where)
    for name, kind in field_types.items():
        if name not in values:
            raise RnnmtError(f"{where} is incomplete: field {name!r} is missing")
        if not isinstance(values[name], kind) or isinstance(values[name], bool):
            raise RnnmtError(f"{where}: field {name!r} has the wrong type ({values[name]!r})")
    unknown = sorted(set(values) - set(field_types))
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
    if manifest.shortlist is not None and manifest.shortlist.get("file") != SHORTLIST_FILE:
        raise RnnmtError(f"{where}: 'shortlist' must name the file {SHORTLIST_FILE!r}")
    needed = {ENCODER_FILE, DECODER_FILE, *manifest.tokenizers.values()}
    needed |= {SHORTLIST_FILE} if manifest.shortlist is not None else set()
    missing = sorted(needed - set(manifest.files))
    if missing:
        raise RnnmtError(f"{where} does not list file(s) {', '.join(missing)}")
    foreign = sorted(set(manifest.files) - needed)
    if foreign:
        raise RnnmtError(
            f"{where} lists file(s) {', '.join(foreign)}, which a package does not hold: each graph is one "
            ".onnx file, loaded from its verified bytes (ONNX external data, which the exporter writes for a "
            "graph over 2 GB, is not supported)"
        )
    return manifest


def verify_file(root: Path, name: str, record: Any) -> bytes:
    """The bytes of a listed file, read once and checked: refused if it is missing, of the wrong size or
    with the wrong sha256. Load the file from these bytes: the file itself may change once read."""
    if Path(name).name != name or name in ("", ".", "..", MANIFEST_FILE):
        raise RnnmtError(f"{root / MANIFEST_FILE} lists an invalid file name {name!r}")
    size = record.get("bytes") if isinstance(record, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or "sha256" not in record:
        raise RnnmtError(f"{root / MANIFEST_FILE}: the entry of {name} needs 'sha256' and 'bytes'")
    path = root / name
    if not path.is_file():
        raise RnnmtError(f"model package {root} is missing {name}")
    with path.open("rb") as f:
        data = f.read(size + 1)  # a byte more than listed tells a longer file, without reading it all
    if len(data) != size:
        raise RnnmtError(
            f"{path} has {path.stat().st_size} bytes but the manifest says {size}: the file is truncated "
            "or replaced; copy the package again"
        )
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise RnnmtError(
            f"{path} does not match its sha256 in the manifest: the file was modified or damaged"
        )
    return data


def find_versions(model_dir: Path) -> dict[str, dict[str, Path]]:
    """Model name → its versions (version → package folder), names sorted, versions oldest first; an
    :class:`RnnmtError` if there is no model.

    ``model_dir`` is a *model repository* or itself a package (it holds ``manifest.json``; one model
    named after its folder). In a repository each folder (hidden ones skipped) is a model named after
    it: either a package itself, an *unversioned* model whose one version is ``""``, or a folder of
    versions, subfolders named by whole numbers (``1``, ``2``, ...; the highest is the latest), each a
    package. The packages are not verified here: :func:`load_package` does that.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RnnmtError(f"model directory not found: {model_dir}")
    if (model_dir / MANIFEST_FILE).is_file():
        return {model_dir.resolve().name: {"": model_dir}}
    found: dict[str, dict[str, Path]] = {}
    for folder in sorted(model_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        versions = sorted(
            (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and p.name.isascii()),
            key=lambda p: int(p.name),
        )
        if versions and not (folder / MANIFEST_FILE).exists():
            found[folder.name] = {p.name: p for p in versions}
        else:
            found[folder.name] = {"": folder}
    if not found:
        raise RnnmtError(f"{model_dir} holds no model package (folders with {MANIFEST_FILE})")
    return found


def find_packages(model_dir: Path) -> dict[str, Path]:
    """Model name → the package folder of its latest version (see :func:`find_versions`)."""
    return {name: list(versions.values())[-1] for name, versions in find_versions(model_dir).items()}


def read_package(
    root: Path, trusted_keys: TrustedKeys | None = None
) -> tuple[ModelPackage, dict[str, bytes]]:
    """Read and verify a package directory: the package, and the bytes of its files as they were verified
    (file name → bytes, ``manifest.json`` included). Each file is read once, its checks run on those
    bytes, and whoever loads the package loads it from them, so a file replaced on disk meanwhile is never
    loaded. Any problem is an :class:`RnnmtError` naming the file. With ``trusted_keys``, the package must
    also carry a valid signature (of the manifest bytes returned) by one of them."""
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
    signed_by = trusted_keys.verify(root, data) if trusted_keys is not None else None
    manifest = parse_manifest(values, str(manifest_path))
    files = {MANIFEST_FILE: data}
    for name, record in manifest.files.items():
        files[name] = verify_file(root, name, record)
    return ModelPackage(root, manifest, hashlib.sha256(data).hexdigest()[:16], signed_by), files


def load_package(root: Path, trusted_keys: TrustedKeys | None = None) -> ModelPackage:
    """The package of :func:`read_package`, verified; the bytes read are dropped (use
    :func:`read_package` to load the files)."""
    return read_package(root, trusted_keys)[0]


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
