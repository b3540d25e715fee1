"""Which language a text is in, among the source languages the server translates from: py3langid's
model (a fork of langid.py, bundled with the library: nothing is downloaded) restricted to them.

Detection reads the start of each text only, :data:`DETECT_CHARS` characters (a few thousand are plenty
to tell languages apart, and py3langid's time grows with the length: 4 MB took half a second), on
threads of the detector's own, :data:`DETECTING` at once, so that the event loop keeps serving other
calls; the texts of one call are classified one after another on one thread.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from rnnmt.serving.server.model_repository import ModelRepository

DETECT_CHARS = 4096
"""Characters read from the start of a text."""

DETECTING = 2
"""Detections running at once; more wait their turn."""


class LanguageDetector:
    """``await detect(texts, among)`` → per text (language, confidence 0–100), choosing among the
    languages ``among`` (the served source languages unless told).

    The identifier of each set of languages is a copy of the full one that is restricted once, before
    any thread uses it, and never changed after: py3langid's ``set_languages`` changes the identifier it
    is called on, so calling it on an identifier that another thread is classifying with would mix the
    two sets. A new set (after a reload) gets a new copy."""

    def __init__(self, repository: Callable[[], ModelRepository]) -> None:
        self.repository = repository
        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.known = set(self.identifier.nb_classes)
        self._restricted: dict[tuple[str, ...], LanguageIdentifier] = {(): self.identifier}
        self._threads = ThreadPoolExecutor(DETECTING, thread_name_prefix="rnnmt-detect")

    def sources(self) -> list[str]:
        return sorted({m.translator.manifest.source_language for m in self.repository().served()})

    def languages(self) -> list[str]:
        """Every language served, translated from or into."""
        manifests = [m.translator.manifest for m in self.repository().served()]
        return sorted({m.source_language for m in manifests} | {m.target_language for m in manifests})

    async def detect(
        self, texts: Sequence[str], among: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        languages = sorted(set(self.sources() if among is None else among))
        if len(languages) == 1:
            return [(languages[0], 100.0)] * len(texts)
        known = tuple(lang for lang in languages if lang in self.known)
        starts = [text[:DETECT_CHARS] for text in texts]
        return await asyncio.wrap_future(self._threads.submit(self._classify, known, starts))

    def _classify(self, languages: tuple[str, ...], texts: Sequence[str]) -> list[tuple[str, float]]:
        """The language of each text among ``languages`` (all py3langid knows if none), on any thread."""
        identifier = self._identifier(languages)
        found = []
        for text in texts:
            language, probability = identifier.classify(text)
            found.append((language, round(float(probability) * 100, 2)))
        return found

    def _identifier(self, languages: tuple[str, ...]) -> LanguageIdentifier:
        identifier = self._restricted.get(languages)
        if identifier is None:
            identifier = copy.copy(self.identifier)  # shares the model's arrays, which it does not change
            identifier.set_languages(languages or None)
            self._restricted[languages] = identifier  # one assignment: readers see it whole
        return identifier
