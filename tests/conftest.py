"""Shared fixtures: a tiny made-up parallel corpus and a tiny model trained on it by rnnmt's own trainer."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rnnmt.serving.core.translator import Translator
from rnnmt.training.corpus import Pair, write_split

LEXICON = {
    "el": "the", "un": "a", "perro": "dog", "gato": "cat", "niño": "boy", "come": "eats", "bebe": "drinks",
    "ve": "sees", "agua": "water", "pan": "bread", "casa": "house", "leche": "milk",
}  # fmt: skip


def run_without_torch(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (``sys`` imported, ``args`` in ``sys.argv[1:]``), assert it
    succeeded without importing torch, and return its stdout."""
    script = f"import sys\n{code}assert 'torch' not in sys.modules, 'torch was imported'\n"
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def toy_pairs() -> list[Pair]:
    """54 sentence pairs of a word-for-word toy language: learnable exactly in seconds."""
    pairs = []
    for det, noun, verb, obj in itertools.product(
        ["el", "un"], ["perro", "gato", "niño"], ["come", "bebe", "ve"], ["agua", "pan", "leche"]
    ):
        es = f"{det} {noun} {verb} {obj}"
        en = " ".join(LEXICON[w] for w in es.split())
        pairs.append(Pair(es.capitalize() + ".", en.capitalize() + ".", f"toy {len(pairs) + 1}"))
    return pairs


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with ``train`` (all pairs) and ``dev`` (every 6th pair) splits, es→en."""
    data = tmp_path_factory.mktemp("toy_data")
    pairs = toy_pairs()
    write_split(data / "train", pairs, "es", "en")
    write_split(data / "dev", pairs[::6], "es", "en")
    return data


def tiny_config(data: Path, run_dir: Path, **train: Any) -> dict[str, Any]:
    """A config dict for a model small enough to overfit the toy corpus in seconds."""
    return {
        "run_dir": str(run_dir),
        "data": {"train": str(data / "train"), "dev": str(data / "dev")},
        "tokenizer": {"vocab_size": 60},
        "model": {
            "emb_size": 32,
            "encoder_hidden": 32,
            "decoder_hidden": 64,
            "attention_size": 32,
            "dropout": 0.0,
        },
        "train": {
            "batch_tokens": 300,
            "max_steps": 300,
            "validate_every": 100,
            "learning_rate": 0.01,
            "label_smoothing": 0.0,
            "log_every": 100,
            "threads": 1,
            **train,
        },
    }


VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "bahdanau": {"model": {"attention": "bahdanau"}, "tokenizer": {"joint": True}},
    "general-feeding-2layers": {
        "model": {"attention": "general", "input_feeding": True, "encoder_layers": 2, "decoder_layers": 2},
        "tokenizer": {"joint": False},
    },
}
"""Model variants the export and engine tests cover; ``bahdanau`` is the default tiny model."""


def train_tiny(data: Path, run_dir: Path, variant: str = "bahdanau", **train_options: Any) -> Path:
    """Train a tiny model of ``variant`` with `rnnmt train` (one thread, seconds); returns ``best.pt``."""
    from rnnmt.training.config import config_from_dict
    from rnnmt.training.trainer import train

    values = tiny_config(data, run_dir, **train_options)
    for section, options in VARIANTS[variant].items():
        values[section].update(options)
    result = train(config_from_dict(values))
    assert result.best_bleu == pytest.approx(100.0), "a tiny model should learn the toy corpus exactly"
    return result.best_checkpoint


@pytest.fixture(scope="session")
def variant_checkpoint(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """variant name → ``best.pt`` of a tiny model of that variant, trained once per session."""
    built: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in built:
            built[variant] = train_tiny(toy_data, tmp_path_factory.mktemp(variant), variant)
        return built[variant]

    return get


@pytest.fixture(scope="session")
def tiny_checkpoint(variant_checkpoint: Callable[[str], Path]) -> Path:
    """``best.pt`` of the default tiny model (Bahdanau attention, joint vocabulary, no input feeding)."""
    return variant_checkpoint("bahdanau")


@pytest.fixture(scope="session")
def trained_run(tiny_checkpoint: Path) -> Path:
    """The run folder of :func:`tiny_checkpoint`."""
    return tiny_checkpoint.parent


@pytest.fixture(scope="session")
def model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the tiny model as ``toy``."""
    from rnnmt.training.export import export_package

    root = tmp_path_factory.mktemp("models")
    export_package(tiny_checkpoint, root / "toy")
    return root


def relabelled_copies(root: Path, package: Path, fields: dict[str, dict[str, Any]]) -> Path:
    """A model repository at ``root`` with a copy of ``package`` under each name of ``fields``, its
    manifest's fields set to those given (``{"source_language": "fr"}``): models of other language pairs
    without training one (the manifest is not among the checksummed files)."""
    for name, changes in fields.items():
        shutil.copytree(package, root / name)
        manifest = root / name / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **changes}))
    return root


@pytest.fixture(scope="session")
def engine(model_dir: Path) -> Translator:
    return Translator.from_package(model_dir / "toy", threads=1)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, made with openssl."""
    root = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=rnnmt test CA"
    )
    (root / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (root / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
        )  # fmt: skip
    return root
