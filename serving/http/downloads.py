"""Translated files waiting to be downloaded: each under an unguessable name, for
:data:`KEEP_SECONDS`, at most :data:`MAX_FILES` of them and :data:`MAX_BYTES` in all (the oldest go
first to make room). Kept in memory: a restart forgets them, as a client retrying a translation would
expect."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

KEEP_SECONDS = 600.0
MAX_FILES = 256
MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Stored:
    name: str
    data: bytes
    expires: float


class Downloads:
    def __init__(
        self,
        keep_seconds: float = KEEP_SECONDS,
        max_files: int = MAX_FILES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_seconds, self.max_files, self.max_bytes, self.clock = (
            keep_seconds,
            max_files,
            max_bytes,
            clock,
        )
        self._files: OrderedDict[str, Stored] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, name: str, data: bytes) -> str:
        """Keep ``data`` as a file called ``name``; returns the id to get it by."""
        with self._lock:
            self._expire()
            while self._files and (
                len(self._files) >= self.max_files or self._bytes + len(data) > self.max_bytes
            ):
                self._drop(next(iter(self._files)))
            token = secrets.token_urlsafe(18)
            self._files[token] = Stored(name, data, self.clock() + self.keep_seconds)
            self._bytes += len(data)
            return token

    def get(self, token: str) -> Stored | None:
        """The file kept under ``token``; None once it expired, or if there is none."""
        with self._lock:
            self._expire()
            return self._files.get(token)

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, stored in self._files.items() if stored.expires <= now]:
            self._drop(token)

    def _drop(self, token: str) -> None:
        self._bytes -= len(self._files.pop(token).data)
