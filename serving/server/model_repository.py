"""The models a server serves: found in a directory, loaded, warmed up, chosen by name.

A *model repository* is a directory with one package folder per model, named after the model (like
Triton's); a directory that is itself a package (it holds ``manifest.json``) serves that one model under
its folder name. Hidden folders are skipped; any other folder must be a valid package, so a typo or a
damaged copy stops the server at startup instead of surfacing as errors later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.options import SearchOptions
from rnnmt.serving.core.package import MANIFEST_FILE, Manifest
from rnnmt.serving.core.translator import Translator

WARM_UP_TEXT = "warm up"


class UnknownModel(RnnmtError):
    """A request named a model the server does not serve."""


@dataclass(frozen=True)
class ServedModel:
    """One model: its name, a content version and its engine (shared by the worker threads)."""

    name: str
    version: str  # the first 16 hex digits of the manifest's sha256
    engine: Translator

    @property
    def manifest(self) -> Manifest:
        return self.engine.manifest

    @property
    def default_options(self) -> SearchOptions:
        return self.engine.default_options


def find_packages(model_dir: Path) -> dict[str, Path]:
    """Model name → package folder, sorted by name; an :class:`RnnmtError` if there is none."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RnnmtError(f"model directory not found: {model_dir}")
    if (model_dir / MANIFEST_FILE).is_file():
        return {model_dir.resolve().name: model_dir}
    found = {p.name: p for p in sorted(model_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not found:
        raise RnnmtError(f"{model_dir} holds no model package (folders with {MANIFEST_FILE})")
    return found


def load_model(name: str, root: Path, engine_threads: int, max_batch_rows: int) -> ServedModel:
    """Load the engine of one package and translate a warm-up text with it."""
    engine = Translator.from_package(root, engine_threads, max_batch_rows)
    engine.translate([WARM_UP_TEXT], engine.default_options)
    version = hashlib.sha256((root / MANIFEST_FILE).read_bytes()).hexdigest()[:16]
    return ServedModel(name, version, engine)


class ModelRepository:
    """The loaded models and the default one."""

    def __init__(self, models: dict[str, ServedModel], default: str) -> None:
        self.models = models
        self.default = default

    @classmethod
    def load(
        cls,
        model_dir: Path,
        default_model: str = "",
        engine_threads: int = 1,
        max_batch_rows: int = 256,
    ) -> ModelRepository:
        """Find, verify, load and warm up every package in ``model_dir``."""
        packages = find_packages(model_dir)
        if default_model and default_model not in packages:
            raise RnnmtError(
                f"--default-model {default_model!r} is not one of the models in {model_dir}: "
                f"{', '.join(packages)}"
            )
        models = {
            name: load_model(name, root, engine_threads, max_batch_rows) for name, root in packages.items()
        }
        return cls(models, default_model or next(iter(models)))

    def get(self, name: str) -> ServedModel:
        """The model called ``name`` (empty: the default); :class:`UnknownModel` if there is none."""
        try:
            return self.models[name or self.default]
        except KeyError:
            raise UnknownModel(
                f"model {name!r} is not served here; the models are: {', '.join(self.models)}"
            ) from None
