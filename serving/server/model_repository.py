"""The models a server serves: found in a directory, loaded, warmed up, chosen by name.

A *model repository* is a directory with one package folder per model, named after the model (like
Triton's); a directory that is itself a package (it holds ``manifest.json``) serves that one model under
its folder name. Hidden folders are skipped; any other folder must be a valid package, so a typo or a
damaged copy stops the server at startup instead of surfacing as errors later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.package import find_packages
from rnnmt.serving.core.translator import Translator

WARM_UP_TEXT = "warm up"


class UnknownModel(RnnmtError):
    """A request named a model the server does not serve."""


@dataclass(frozen=True)
class ServedModel:
    """One model: its name and its translator (shared by the worker threads)."""

    name: str
    translator: Translator


def load_model(name: str, root: Path, engine_threads: int, max_batch_rows: int) -> ServedModel:
    """Load the translator of one package and translate a warm-up text with it."""
    translator = Translator.from_package(root, engine_threads, max_batch_rows)
    translator.translate([WARM_UP_TEXT], translator.default_options)
    return ServedModel(name, translator)


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
