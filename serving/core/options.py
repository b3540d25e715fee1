"""Decoding options: the settings a search runs with, and the values a request may override.

:class:`SearchOptions` are complete settings (a model's defaults come from its manifest);
:class:`Decoding` holds what a request, a command line or a batch job asks for, where 0 / ``None`` keep
the default. ``defaults.overlay(decoding)`` gives the settings a request runs with, and
:meth:`SearchOptions.check` is the one check, done once, at the edge (the translator adds the limit its
vocabulary sets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from rnnmt.errors import RnnmtError

MAX_BEAM_SIZE = 16
MAX_OUTPUT_TOKENS = 1024
MAX_LENGTH_PENALTY = 10.0
MAX_LENGTH_RATIO = 10.0


@dataclass(frozen=True)
class Decoding:
    """Decoding options as a request gives them: 0 / ``None`` take the model's defaults."""

    beam_size: int = 0
    n_best: int = 0
    length_penalty: float | None = None
    max_output_tokens: int = 0


@dataclass(frozen=True)
class SearchOptions:
    """Decoding settings; a batch is searched with one set of options."""

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0  # GNMT α: score / ((5 + length) / 6) ** α; 0 = raw log-prob
    max_output_tokens: int = 256  # absolute cap on output pieces (EOS included)
    max_length_ratio: float = 2.0  # and at most ratio × source length + 10
    min_output_tokens: int = 0  # EOS is blocked before this many pieces

    def max_length(self, src_length: int) -> int:
        return max(1, min(self.max_output_tokens, int(self.max_length_ratio * src_length) + 10))

    def overlay(self, decoding: Decoding) -> SearchOptions:
        """These options with a request's values over them; ``n_best`` left at 0 is the default's,
        capped by the request's beam. Not checked: see :meth:`check`."""
        beam_size = decoding.beam_size or self.beam_size
        return replace(
            self,
            beam_size=beam_size,
            n_best=decoding.n_best or min(self.n_best, beam_size),
            length_penalty=self.length_penalty
            if decoding.length_penalty is None
            else decoding.length_penalty,
            max_output_tokens=decoding.max_output_tokens or self.max_output_tokens,
        )

    def check(self) -> SearchOptions:
        """Return self if every field is in range, else raise an :class:`RnnmtError` naming the field."""

        def require(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise RnnmtError(f"{name} must be {rule}, not {getattr(self, name)!r}")

        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        require(
            "beam_size",
            is_int(self.beam_size) and 1 <= self.beam_size <= MAX_BEAM_SIZE,
            f"1 to {MAX_BEAM_SIZE}",
        )
        require(
            "n_best",
            is_int(self.n_best) and 1 <= self.n_best <= self.beam_size,
            f"1 to beam_size ({self.beam_size})",
        )
        require(
            "length_penalty",
            is_number(self.length_penalty) and 0 <= self.length_penalty <= MAX_LENGTH_PENALTY,
            f"0 to {MAX_LENGTH_PENALTY}",
        )
        require(
            "max_output_tokens",
            is_int(self.max_output_tokens) and 1 <= self.max_output_tokens <= MAX_OUTPUT_TOKENS,
            f"1 to {MAX_OUTPUT_TOKENS}",
        )
        require(
            "max_length_ratio",
            is_number(self.max_length_ratio) and 0 < self.max_length_ratio <= MAX_LENGTH_RATIO,
            f"above 0 and at most {MAX_LENGTH_RATIO}",
        )
        require(
            "min_output_tokens",
            is_int(self.min_output_tokens) and 0 <= self.min_output_tokens < self.max_output_tokens,
            f"0 to max_output_tokens - 1 ({self.max_output_tokens - 1})",
        )
        return self
