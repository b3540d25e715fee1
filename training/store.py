"""The training corpus as token ids on disk: built once from the text files, memory-mapped by the trainer.

A store is a folder named by its key, a hash of everything its contents depend on (the text files'
bytes, the tokenizer models, ``max_train_tokens`` and :data:`FORMAT`), so a changed input builds a new
store and an unchanged one is reused by the next run, a resumed run and every DDP rank:

- ``src.ids``, ``tgt.ids``: every kept pair's source and target ids, concatenated (no BOS/EOS), as
  ``uint16`` where the vocabulary fits, else ``int32``;
- ``src.len``, ``tgt.len``: the pieces of each kept pair (``int32``); offsets are their running sums;
- ``manifest.json``, written last: the key, the counts and every file's size.

Building streams the files in chunks, so its memory does not grow with the corpus. It writes into a
``*.partial`` folder renamed into place when complete; a store whose manifest or file sizes do not match
is never used, it is removed and built again. Opening maps the id files (the pages a rank reads are the
only ones it loads) and reads the length arrays: 8 bytes per pair.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnmt.errors import RnnmtError
from rnnmt.progress import Progress, format_duration
from rnnmt.tokenizers.sentencepiece import EOS_ID, Tokenizer
from rnnmt.training.batching import Example
from rnnmt.training.corpus import read_chunks

FORMAT = 1
FILES = ("src.ids", "tgt.ids", "src.len", "tgt.len")

logger = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a missing file is a clear error)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except FileNotFoundError as exc:
        raise RnnmtError(f"file not found: {path}") from exc
    return digest.hexdigest()


def store_key(src: Path, tgt: Path, src_tok: Tokenizer, tgt_tok: Tokenizer, max_tokens: int) -> str:
    """The hash a store of these inputs is named by."""
    parts = [
        f"format {FORMAT}",
        file_digest(src),
        file_digest(tgt),
        hashlib.sha256(src_tok.model_proto).hexdigest(),
        hashlib.sha256(tgt_tok.model_proto).hexdigest(),
        f"max_tokens {max_tokens}",
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Manifest:
    key: str
    pairs: int  # kept
    read: int
    skipped: int  # empty on a side, or max_tokens pieces or more
    id_dtype: str
    sizes: dict[str, int]


class CorpusStore:
    """A built store, opened: ``len(store)`` pairs; ``store.src_lengths``/``tgt_lengths`` [N] int32."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self.folder = folder
        self.manifest = manifest
        self.src_lengths = np.fromfile(folder / "src.len", dtype=np.int32)
        self.tgt_lengths = np.fromfile(folder / "tgt.len", dtype=np.int32)
        self._src_offsets = _offsets(self.src_lengths)
        self._tgt_offsets = _offsets(self.tgt_lengths)
        dtype = np.dtype(manifest.id_dtype)
        self._src = _map(folder / "src.ids", dtype)
        self._tgt = _map(folder / "tgt.ids", dtype)

    def __len__(self) -> int:
        return len(self.src_lengths)

    def examples(self, indices: Sequence[int] | np.ndarray) -> list[Example]:
        """The examples at ``indices``: source ids with EOS appended, target ids."""
        out: list[Example] = []
        for i in indices:
            so, to = self._src_offsets[i], self._tgt_offsets[i]
            src = self._src[so : so + self.src_lengths[i]].tolist()
            out.append(([*src, EOS_ID], self._tgt[to : to + self.tgt_lengths[i]].tolist()))
        return out


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return offsets


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _manifest(folder: Path, key: str) -> Manifest | None:
    """The manifest of a complete store of ``key`` in ``folder``, else None."""
    try:
        values = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        manifest = Manifest(**values)
    except (OSError, ValueError, TypeError):
        return None
    if manifest.key != key:
        return None
    for name in FILES:
        path = folder / name
        if not path.is_file() or path.stat().st_size != manifest.sizes.get(name):
            return None
    return manifest


def open_store(
    cache: Path,
    src: Path,
    tgt: Path,
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    max_tokens: int,
    build: bool = True,
) -> CorpusStore:
    """The store of these inputs under ``cache``, built first unless a complete one is there.

    ``build=False`` (DDP ranks other than 0, after rank 0 built it) refuses a missing store instead."""
    key = store_key(src, tgt, src_tok, tgt_tok, max_tokens)
    folder = cache / key
    manifest = _manifest(folder, key)
    if manifest is None:
        if not build:
            raise RnnmtError(f"corpus store {folder} is missing or incomplete")
        if folder.exists():
            logger.warning("corpus store %s is incomplete; building it again", folder)
            shutil.rmtree(folder)
        manifest = build_store(folder, key, src, tgt, src_tok, tgt_tok, max_tokens)
    return CorpusStore(folder, manifest)


def build_store(
    folder: Path, key: str, src: Path, tgt: Path, src_tok: Tokenizer, tgt_tok: Tokenizer, max_tokens: int
) -> Manifest:
    """Tokenize the files into a store at ``folder`` (via ``folder.partial``); its manifest."""
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted build: start over
    partial.mkdir(parents=True)
    vocab = max(src_tok.vocab_size, tgt_tok.vocab_size)
    id_dtype = np.dtype(np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.int32)
    read = kept = 0
    progress = Progress(0, "pairs")
    logger.info("tokenizing %s and %s into %s", src, tgt, folder)
    files = {name: (partial / name).open("wb") for name in FILES}
    try:
        for chunk in read_chunks([src, tgt]):
            srcs = src_tok.encode([s for s, _ in chunk])
            tgts = tgt_tok.encode([t for _, t in chunk])
            keep = [
                (s, t)
                for s, t in zip(srcs, tgts, strict=True)
                if s and t and max(len(s), len(t)) < max_tokens
            ]
            read, kept = read + len(chunk), kept + len(keep)
            for side, seqs in (("src", [s for s, _ in keep]), ("tgt", [t for _, t in keep])):
                lengths = np.fromiter((len(x) for x in seqs), dtype=np.int32, count=len(seqs))
                ids = np.fromiter((i for x in seqs for i in x), dtype=id_dtype, count=int(lengths.sum()))
                files[f"{side}.ids"].write(ids.tobytes())
                files[f"{side}.len"].write(lengths.tobytes())
            progress.update(read, None, kept=f"{kept:,}")
    except BaseException:
        for f in files.values():
            f.close()
        shutil.rmtree(partial)
        raise
    for f in files.values():
        f.close()
    progress.close()
    sizes = {name: (partial / name).stat().st_size for name in FILES}
    manifest = Manifest(key, kept, read, read - kept, id_dtype.name, sizes)
    (partial / "manifest.json").write_text(json.dumps(vars(manifest), indent=1), encoding="utf-8")
    for name in (*FILES, "manifest.json"):
        with (partial / name).open("rb") as written:
            os.fsync(written.fileno())
    partial.rename(folder)
    seconds = time.monotonic() - progress.start
    logger.info(
        "corpus store: %s pairs kept of %s read in %s (%s pairs/s)",
        f"{kept:,}",
        f"{read:,}",
        format_duration(seconds),
        f"{read / max(seconds, 1e-9):,.0f}",
    )
    return manifest
