"""The models a server serves: found in a directory, loaded, warmed up, chosen by name and version, and
reloaded while the server runs.

A *model repository* is a directory with one folder per model, named after the model (like Triton's):
either a package (an unversioned model) or a folder of versions named by whole numbers, each a package
(:func:`~rnnmt.serving.core.package.find_versions`). A directory that is itself a package serves that one
model under its folder name. The *version policy* says which versions are served: ``latest`` (the
default), ``all``, or ``latest:N``; a request names a served version or gets the model's latest.

At start-up every package served must load, so a typo or a damaged copy stops the server instead of
surfacing as errors later. A *reload* (:meth:`ModelRepository.reload`) looks at the directory again:
a new or changed package is verified, loaded and warmed up on the side, then the whole set of served
models is replaced at once. When a package of a model fails, every version of that model served
before keeps serving (a bad new version never replaces a good one), and the failure is reported. A call holds the model it started with, so calls in flight finish on their version;
a version no longer served is freed when its last call ends, and the memory it held goes back to the
operating system (:func:`release_when_freed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.package import MANIFEST_FILE, find_versions
from rnnmt.serving.core.signing import SIGNATURE_FILE, TrustedKeys
from rnnmt.serving.core.translator import Translator

logger = logging.getLogger(__name__)

WARM_UP_TEXT = "warm up"

MAX_NAME_CHARS = 256
"""The longest model name or version a request may give (a longer one is refused without being shown)."""

SHOWN_NAME_CHARS = 64
"""The most of a name that requests gave that an error message or a log line shows."""


class UnknownModel(RnnmtError):
    """A request named a model (or version) the server does not serve."""


def shorten(name: str) -> str:
    """A name that a request gave, cut to :data:`SHOWN_NAME_CHARS` (and "…") for messages and logs."""
    return name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS] + "…"


@dataclass(frozen=True, eq=False)
class ServedModel:
    """One served version of a model: its translator is shared by the worker threads. Compared by
    identity: a reloaded package is another ServedModel, even at the same name and version."""

    name: str
    version: str  # the version folder's name; "" for an unversioned package
    translator: Translator
    fingerprint: str  # what the package looked like on disk when it was loaded (see :func:`fingerprint`)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of each model are served: the ``latest`` N (0 = all)."""

    latest: int = 1

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``all`` or ``latest:N`` (N ≥ 1)."""
        if text == "all":
            return cls(0)
        if text == "latest":
            return cls(1)
        head, _, count = text.partition(":")
        if head == "latest" and count.isdigit() and int(count) >= 1:
            return cls(int(count))
        raise RnnmtError(f"--version-policy must be latest, all or latest:N (N ≥ 1), not {text!r}")

    def choose(self, versions: dict[str, Path]) -> dict[str, Path]:
        chosen = list(versions.items())[-self.latest :] if self.latest else list(versions.items())
        return dict(chosen)


def fingerprint(root: Path) -> str:
    """A cheap identity of a package folder's current content: the manifest's and signature's bytes and
    the name, size and modification time of every file (so a package still being copied looks changed
    once the copy completes). Nothing is verified here."""
    digest = hashlib.sha256()
    for name in (MANIFEST_FILE, SIGNATURE_FILE):
        path = root / name
        digest.update(path.read_bytes() if path.is_file() else b"-")
    for path in sorted(root.iterdir()):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None with a C library that has none."""
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None
    if trim is not None:
        trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return trim


MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the memory freed so far back to the operating system (glibc's ``malloc_trim(0)``; nothing
    with another C library). glibc keeps what a process frees for reuse, and once large blocks were
    freed it serves blocks of up to 32 MiB from its heaps instead of mapping them apart, so the sessions
    that reloads free would otherwise stay in the server's resident memory, reload after reload."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def release_when_freed(
    translator: Translator, loop: asyncio.AbstractEventLoop, released: Callable[[], None]
) -> None:
    """Run :func:`release_freed_memory`, then ``released``, on ``loop`` once ``translator`` is freed, by
    whichever thread drops it last. (A weakref callback runs before the object's attributes, its
    sessions, are freed: the release is queued for after.)"""

    def release() -> None:
        release_freed_memory()
        released()

    def queue_release() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
            loop.call_soon_threadsafe(release)

    weakref.finalize(translator, queue_release).atexit = False


@dataclass
class LoadSettings:
    engine_threads: int = 1
    max_batch_rows: int = 256
    trusted_keys: TrustedKeys | None = None


def load_model(name: str, version: str, root: Path, settings: LoadSettings) -> ServedModel:
    """Verify and load one package, then translate a warm-up text with it."""
    stamp = fingerprint(root)
    translator = Translator.from_package(
        root, settings.engine_threads, settings.max_batch_rows, settings.trusted_keys
    )
    translator.translate([WARM_UP_TEXT], translator.default_options)
    return ServedModel(name, version, translator, stamp)


@dataclass(frozen=True)
class Failure:
    name: str
    version: str
    path: Path
    error: str


@dataclass
class ReloadReport:
    """What a reload changed: the served models it loaded, kept and stopped serving, and what failed."""

    loaded: list[ServedModel] = field(default_factory=list)
    kept: list[ServedModel] = field(default_factory=list)
    unloaded: list[ServedModel] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


Served = dict[str, dict[str, ServedModel]]
"""Model name → version → served model; names sorted, versions oldest first."""


class ModelRepository:
    """The served models and the default one. :attr:`models` is replaced as a whole by a reload, never
    changed in place, so a reader always sees one consistent set."""

    def __init__(
        self,
        model_dir: Path,
        models: Served,
        default: str,
        policy: VersionPolicy | None = None,
        settings: LoadSettings | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.models = models
        self.default = default
        self.policy = policy or VersionPolicy()
        self.settings = settings or LoadSettings()
        self._reloading = threading.Lock()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        default_model: str = "",
        policy: VersionPolicy | None = None,
        settings: LoadSettings | None = None,
    ) -> ModelRepository:
        """Find, verify, load and warm up every package the policy serves; any failure is an error."""
        settings, policy = settings or LoadSettings(), policy or VersionPolicy()
        found = find_versions(model_dir)
        if default_model and default_model not in found:
            raise RnnmtError(
                f"--default-model {default_model!r} is not one of the models in {model_dir}: "
                f"{', '.join(found)}"
            )
        models = {
            name: {
                version: load_model(name, version, root, settings)
                for version, root in policy.choose(versions).items()
            }
            for name, versions in found.items()
        }
        return cls(model_dir, models, default_model or next(iter(models)), policy, settings)

    def served(self) -> list[ServedModel]:
        return [model for versions in self.models.values() for model in versions.values()]

    def get(self, name: str, version: str = "") -> ServedModel:
        """Version ``version`` (empty: the latest served) of the model ``name`` (empty: the default);
        :class:`UnknownModel` if it is not served."""
        models = self.models
        versions = models.get(name or self.default)
        if versions is None:
            raise UnknownModel(
                f"model {shorten(name)!r} is not served here; the models are: {', '.join(models)}"
            )
        if not version:
            return list(versions.values())[-1]
        try:
            return versions[version]
        except KeyError:
            shown = ", ".join(v or '"" (unversioned)' for v in versions)
            raise UnknownModel(
                f"model {name or self.default!r} has no version {shorten(version)!r} served; its versions: {shown}"
            ) from None

    def reload(self) -> ReloadReport:
        """Look at the model directory again and serve what it holds now (see the module docstring).
        Reloads run one at a time; the served set changes in one assignment at the end."""
        with self._reloading:
            report = ReloadReport()
            try:
                found = find_versions(self.model_dir)
            except (RnnmtError, OSError) as exc:
                report.failed.append(Failure("", "", self.model_dir, str(exc)))
                report.kept = self.served()
                return report
            current: Served = self.models
            served: Served = {}
            for name, versions in found.items():
                for version, root in self.policy.choose(versions).items():
                    model = self._load_or_keep(
                        name, version, root, current.get(name, {}).get(version), report
                    )
                    if model is not None:
                        served.setdefault(name, {})[version] = model
            failed = {f.name for f in report.failed}
            for name, kept_versions in current.items():  # a model with a failed package keeps its versions
                for version, old in kept_versions.items():
                    if name in failed and version not in served.get(name, {}):
                        served.setdefault(name, {})[version] = old
                        report.kept.append(old)
            ordered = {
                name: dict(sorted(served[name].items(), key=lambda item: int(item[0] or 0)))
                for name in sorted(served)
            }
            report.unloaded = [
                m for m in self.served() if all(m is not n for v in ordered.values() for n in v.values())
            ]
            self.models = ordered
            return report

    def _load_or_keep(
        self, name: str, version: str, root: Path, old: ServedModel | None, report: ReloadReport
    ) -> ServedModel | None:
        try:
            if old is not None and fingerprint(root) == old.fingerprint:
                report.kept.append(old)
                return old
            model = load_model(name, version, root, self.settings)
        except (RnnmtError, OSError) as exc:
            report.failed.append(Failure(name, version, root, str(exc)))
            logger.error(
                "model package not loaded",
                extra={"fields": {"model": name, "version": version, "path": str(root), "error": str(exc)}},
            )
            return None
        report.loaded.append(model)
        return model
