"""Which language a text is in, among the source languages the server translates from: py3langid's
model (a fork of langid.py, bundled with the library: nothing is downloaded) restricted to them.

Detection reads the start of the text only, :data:`DETECT_CHARS` characters (a few thousand are plenty to
tell languages apart, and py3langid's time grows with the length: 4 MB took half a second), on threads
of the detector's own, :data:`DETECTING` at once, so that the event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from rnnmt.serving.server.model_repository import ModelRepository

DETECT_CHARS = 4096
"""Characters read from the start of a text (of texts joined by spaces)."""

DETECTING = 2
"""Detections running at once; more wait their turn."""


def sample(texts: Sequence[str]) -> str:
    """The start of ``texts`` joined by spaces: at most :data:`DETECT_CHARS` characters."""
    parts: list[str] = []
    room = DETECT_CHARS
    for text in texts:
        if room <= 0:
            break
        parts.append(text[:room])
        room -= len(parts[-1]) + 1
    return " ".join(parts)


class LanguageDetector:
    """``await detect(texts)`` → (language, confidence 0–100), choosing among the served source languages.

    The identifier of each set of languages is a copy of the full one that is restricted once, before
    any thread uses it, and never changed after: py3langid's ``set_languages`` changes the identifier it
    is called on, so calling it on an identifier that another thread is classifying with would mix the
    two sets. A new set (after a reload) gets a new copy."""

    def __init__(self, repository: Callable[[], ModelRepository]) -> None:
        self.repository = repository
        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.known = set(self.identifier.nb_classes)
        self._restricted: tuple[tuple[str, ...], LanguageIdentifier] = ((), self.identifier)
        self._threads = ThreadPoolExecutor(DETECTING, thread_name_prefix="rnnmt-detect")

    def sources(self) -> list[str]:
        return sorted({m.translator.manifest.source_language for m in self.repository().served()})

    async def detect(self, texts: Sequence[str]) -> tuple[str, float]:
        languages = self.sources()
        if len(languages) == 1:
            return languages[0], 100.0
        known = tuple(lang for lang in languages if lang in self.known)
        text = sample(texts)
        return await asyncio.wrap_future(self._threads.submit(self._classify, known, text))

    def _classify(self, languages: tuple[str, ...], text: str) -> tuple[str, float]:
        """The language of ``text`` among ``languages`` (all py3langid knows if none), on any thread."""
        identifier = self._identifier(languages)
        language, probability = identifier.classify(text)
        return language, round(float(probability) * 100, 2)

    def _identifier(self, languages: tuple[str, ...]) -> LanguageIdentifier:
        chosen, identifier = self._restricted
        if chosen != languages:
            identifier = copy.copy(self.identifier)  # shares the model's arrays, which it does not change
            identifier.set_languages(languages or None)
            self._restricted = (languages, identifier)  # one assignment: readers see a whole pair
        return identifier
