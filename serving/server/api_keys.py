"""API keys and their limits, one :class:`KeyRing` for both doors.

A ring holds the bearer tokens of ``--auth-token``/``--auth-token-file`` (no limits) and the keys of
``--api-keys-file``, one per line::

    # name  key                               requests/minute  characters/minute
    alice   3b6f0c1e9a2d4f8b7c5e1a0d9f8e7c6b  60               50000
    batch   9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f  0                0

0 means no limit. A name (letters, digits, ``._-``) stands for its key in the metrics and the log;
the key itself is never shown. Keys are compared in constant time, against every key each time. The
file is read again on every reload (SIGHUP, the admin service, polling): a file that does not parse
keeps the keys read before, and says why.

Limits are token buckets that hold a minute's worth and refill continuously: a key may send its
requests per minute in a burst, then one every 60/N seconds. A call over a limit is refused with
:class:`OverLimit` (RESOURCE_EXHAUSTED, HTTP 429) and the whole seconds after which it would pass
(``retry-after``); it spends nothing. A call of more characters than the key may send in a minute can
never pass: :class:`TooLarge` (INVALID_ARGUMENT).
"""

from __future__ import annotations

import hmac
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnmt.errors import RnnmtError
from rnnmt.serving.server.metrics import Metrics

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
MIN_KEY_CHARS = 16


@dataclass(frozen=True)
class ApiKey:
    name: str
    secret: bytes
    requests_per_minute: int = 0  # 0: no limit
    characters_per_minute: int = 0


class OverLimit(RnnmtError):
    """A key is over one of its limits: the call may pass after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(RnnmtError):
    """A call of more characters than its key may ever send in a minute."""


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """The keys of a keys file's ``text`` (see the module docstring); errors name ``source`` and the line."""
    keys: list[ApiKey] = []
    names: set[str] = set()
    secrets: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{source} line {number}"
        if len(fields) not in (2, 4):
            raise RnnmtError(f"{where}: expected 'NAME KEY [REQUESTS_PER_MINUTE CHARACTERS_PER_MINUTE]'")
        name, secret, *limits = fields
        if not NAME.fullmatch(name):
            raise RnnmtError(f"{where}: a name is 1 to 64 letters, digits, '.', '_' or '-'")
        if len(secret) < MIN_KEY_CHARS:
            raise RnnmtError(f"{where}: the key of {name} has fewer than {MIN_KEY_CHARS} characters")
        if not all(limit.isdigit() for limit in limits):
            raise RnnmtError(f"{where}: limits are whole numbers (0: no limit)")
        if name in names or secret.encode() in secrets:
            raise RnnmtError(f"{where}: {name} or its key is listed twice")
        names.add(name)
        secrets.add(secret.encode())
        keys.append(ApiKey(name, secret.encode(), *(int(limit) for limit in limits)))
    return keys


class Bucket:
    """``per_minute`` units, refilled continuously; full at first."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute, self.level, self.when = per_minute, float(per_minute), now

    def wait(self, amount: int, now: float) -> float:
        """Seconds until ``amount`` units are there (0.0: they are), refilling up to ``now``."""
        self.level = min(self.per_minute, self.level + (now - self.when) * self.per_minute / 60)
        self.when = now
        return max(0.0, (amount - self.level) * 60 / self.per_minute)


class KeyRing:
    """The accepted keys and what each has spent; safe to call from any thread."""

    def __init__(
        self,
        tokens: Sequence[str] = (),
        keys_file: Path | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = [
            ApiKey(f"token-{i + 1}" if len(tokens) > 1 else "token", t.encode()) for i, t in enumerate(tokens)
        ]
        self.keys_file, self.metrics, self.clock = keys_file, metrics, clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self.keys = self.tokens + self._read()

    @property
    def enabled(self) -> bool:
        """Whether calls need a key."""
        return bool(self.keys)

    def _read(self) -> list[ApiKey]:
        if self.keys_file is None:
            return []
        try:
            text = self.keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RnnmtError(f"cannot read --api-keys-file {self.keys_file}: {exc}") from exc
        keys = parse_keys(text, str(self.keys_file))
        if not keys:
            raise RnnmtError(f"--api-keys-file {self.keys_file} holds no key")
        return keys

    def reload(self) -> None:
        """Read the keys file again (an :class:`RnnmtError` keeps the keys as they were); the spending of
        a key whose name and limits are unchanged carries on."""
        keys = self.tokens + self._read()
        with self._lock:
            self.keys = keys
            limits = {(k.name, "requests"): k.requests_per_minute for k in keys}
            limits |= {(k.name, "characters"): k.characters_per_minute for k in keys}
            self._buckets = {at: b for at, b in self._buckets.items() if limits.get(at) == b.per_minute}

    def find(self, given: str) -> ApiKey | None:
        """The key ``given`` is, compared with every key in constant time; None if it is none."""
        given_bytes, found = given.encode(), None
        for key in self.keys:
            if hmac.compare_digest(given_bytes, key.secret) and found is None:
                found = key
        return found

    def spend(self, key: ApiKey | None, characters: int) -> None:
        """Count one call of ``characters`` against ``key`` (nothing for None), or refuse it
        (:class:`OverLimit`, :class:`TooLarge`) without counting it."""
        if key is None:
            return
        if key.characters_per_minute and characters > key.characters_per_minute:
            self._count(key, "too_large")
            raise TooLarge(
                f"the call has {characters} characters; key {key.name} may send at most "
                f"{key.characters_per_minute} a minute"
            )
        with self._lock:
            now = self.clock()
            wanted = [
                (self._bucket(key.name, unit, limit, now), amount, unit)
                for unit, limit, amount in (
                    ("requests", key.requests_per_minute, 1),
                    ("characters", key.characters_per_minute, characters),
                )
                if limit
            ]
            waits = [(bucket.wait(amount, now), unit) for bucket, amount, unit in wanted]
            wait, unit = max(waits, default=(0.0, ""))
            if wait == 0.0:
                for bucket, amount, _ in wanted:
                    bucket.level -= amount
        if wait > 0.0:
            self._count(key, "limited")
            limit = key.requests_per_minute if unit == "requests" else key.characters_per_minute
            raise OverLimit(
                f"key {key.name} is over its limit of {limit} {unit} a minute; retry after "
                f"{math.ceil(wait)} s",
                math.ceil(wait),
            )
        self._count(key, "ok", characters)

    def _bucket(self, name: str, unit: str, limit: int, now: float) -> Bucket:
        bucket = self._buckets.get((name, unit))
        if bucket is None:
            bucket = self._buckets[(name, unit)] = Bucket(limit, now)
        return bucket

    def _count(self, key: ApiKey, result: str, characters: int = 0) -> None:
        if self.metrics is not None:
            self.metrics.key_calls.labels(key.name, result).inc()
            if characters:
                self.metrics.key_characters.labels(key.name).inc(characters)
