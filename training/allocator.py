"""The memory allocator training runs on: chosen by ``RNNMT_ALLOCATOR``, preloaded before torch starts.

PyTorch allocates CPU tensors with malloc, and a training step's activations and gradients change shape
with every batch. glibc's defaults serve large blocks with mmap and unmap them on free, so every step
faults its working set back in, page by page (4.4 M page faults and 27% of the CPU time in the kernel
in 20 steps of the reference config). Keeping freed memory instead (``glibc-kept``: no mmap, no trim)
bought 1.3-1.4× the target tokens/s but kept the largest working set of every batch shape for good:
8.8 GB after 10 minutes of the reference config. ``benchmarks/train_memory.py`` measures the choices side
by side; ``docs/benchmarks.md`` has its figures.

- ``jemalloc`` / ``tcmalloc``: Debian's ``libjemalloc2`` / ``libtcmalloc-minimal4`` (``make install``
  installs both), preloaded by re-executing the command with ``LD_PRELOAD``;
- ``glibc-kept``: glibc with the settings above (what a missing library falls back to);
- ``glibc``: glibc as it comes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

from rnnmt.errors import RnnmtError

DEFAULT = "tcmalloc"
LIBRARIES = {"jemalloc": "jemalloc", "tcmalloc": "tcmalloc_minimal"}  # name → what find_library takes
PACKAGES = {"jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}  # Debian's
CHOICES = (*LIBRARIES, "glibc-kept", "glibc")
M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4

logger = logging.getLogger(__name__)


def chosen() -> str:
    """The allocator ``RNNMT_ALLOCATOR`` names (default :data:`DEFAULT`); another value is an error."""
    name = os.environ.get("RNNMT_ALLOCATOR", "") or DEFAULT
    if name not in CHOICES:
        raise RnnmtError(f"RNNMT_ALLOCATOR must be one of {', '.join(CHOICES)}, not {name!r}")
    return name


def preload(argv: list[str]) -> None:
    """Re-execute ``python -m rnnmt.cli *argv`` with the chosen allocator preloaded, unless it already
    is, or it is glibc, or it is not installed (then :func:`settle` falls back to ``glibc-kept``).

    Call it before anything allocates much: the process is replaced (same pid, so torchrun's workers
    stay its children)."""
    name = chosen()
    if name not in LIBRARIES:
        return
    library = ctypes.util.find_library(LIBRARIES[name])
    preloaded = os.environ.get("LD_PRELOAD", "").split()
    if library is None or library in preloaded:
        return
    env = {**os.environ, "LD_PRELOAD": " ".join([*preloaded, library])}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "rnnmt.cli", *argv], env)


def settle() -> str:
    """The allocator this process runs on, after applying the glibc settings where they are chosen or
    where the chosen library is missing (logged)."""
    name = chosen()
    if name in LIBRARIES:
        library = ctypes.util.find_library(LIBRARIES[name])
        if library is not None and library in os.environ.get("LD_PRELOAD", "").split():
            return name
        logger.warning(
            "allocator %s is not preloaded (install lib%s); using glibc-kept", name, LIBRARIES[name]
        )
        name = "glibc-kept"
    if name == "glibc-kept" and not keep_freed_memory():
        return "glibc"
    return name


def keep_freed_memory() -> bool:
    """Apply the ``glibc-kept`` settings to this process; False where the C library has no (working)
    ``mallopt``. Blocks too large for a thread's arena still come from mmap: glibc falls back to it there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
