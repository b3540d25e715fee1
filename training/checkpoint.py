"""Checkpoints: self-contained files (weights, config, tokenizer models) that load with weights_only=True.

A checkpoint holds everything needed to translate: the model config, the weights and the SentencePiece
models as byte tensors, so `rnnmt evaluate` and `rnnmt export` need nothing else. Training checkpoints
(``latest.pt``) add the optimizer, scheduler, RNG and data position for resuming.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnmt.errors import RnnmtError
from rnnmt.tokenizers.sentencepiece import Tokenizer
from rnnmt.training.config import RunConfig, config_from_dict
from rnnmt.training.model import Seq2Seq

FORMAT = "rnnmt-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A model ready to translate, with its tokenizers and the checkpoint's metadata."""

    model: Seq2Seq
    config: RunConfig
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    meta: dict[str, Any]  # step, dev scores, training data, ...


def tokenizer_bytes(tokenizer: Tokenizer) -> torch.Tensor:
    return torch.frombuffer(bytearray(tokenizer.model_proto), dtype=torch.uint8)


def save_checkpoint(
    path: Path,
    model: Seq2Seq,
    config: RunConfig,
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    meta: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> None:
    """Write atomically (a temp file renamed), so an interrupted save never leaves a broken checkpoint."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "src_tokenizer": tokenizer_bytes(src_tokenizer),
        "tgt_tokenizer": tokenizer_bytes(tgt_tokenizer),
        "meta": meta,
    }
    if training_state is not None:
        payload["training_state"] = training_state
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The raw checkpoint dict; a missing, corrupt or foreign file is a clear :class:`RnnmtError`."""
    if not path.is_file():
        raise RnnmtError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise about a file refused below anyway
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        # PyTorch's message advises loading with weights_only=False, which runs any code the file holds:
        # never pass that on. The file is damaged, or was not written by rnnmt.
        raise RnnmtError(
            f"{path} is not a readable rnnmt checkpoint: the file is corrupt (truncated or damaged) or "
            "not an rnnmt checkpoint"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RnnmtError(f"{path} is not an rnnmt checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise RnnmtError(
            f"{path} has checkpoint format {payload.get('format_version')}; this rnnmt reads {FORMAT_VERSION}"
        )
    return payload


def model_from_payload(payload: dict[str, Any]) -> LoadedModel:
    config = config_from_dict(payload["config"])
    src_tok = Tokenizer(payload["src_tokenizer"].numpy().tobytes(), "checkpoint source tokenizer")
    tgt_tok = Tokenizer(payload["tgt_tokenizer"].numpy().tobytes(), "checkpoint target tokenizer")
    model = Seq2Seq(src_tok.vocab_size, tgt_tok.vocab_size, config.model)
    model.load_state_dict(payload["model"])
    return LoadedModel(model.eval(), config, src_tok, tgt_tok, payload["meta"])


def load_model(path: Path) -> LoadedModel:
    return model_from_payload(load_checkpoint(path))


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights of several checkpoints of one model."""
    states = [load_checkpoint(path)["model"] for path in paths]
    return {name: sum(s[name] for s in states) / len(states) for name in states[0]}
