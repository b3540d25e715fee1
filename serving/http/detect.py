"""Which language a text is in, among the source languages the server translates from: py3langid's
model (a fork of langid.py, bundled with the library: nothing is downloaded) restricted to them."""

from __future__ import annotations

from collections.abc import Callable

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from rnnmt.serving.server.model_repository import ModelRepository


class LanguageDetector:
    """``detect(text)`` → (language, confidence 0–100), choosing among the served source languages."""

    def __init__(self, repository: Callable[[], ModelRepository]) -> None:
        self.repository = repository
        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.known = set(self.identifier.nb_classes)
        self.languages: tuple[str, ...] = ()

    def sources(self) -> list[str]:
        return sorted({m.translator.manifest.source_language for m in self.repository().served()})

    def detect(self, text: str) -> tuple[str, float]:
        languages = tuple(self.sources())
        if len(languages) == 1:
            return languages[0], 100.0
        known = [lang for lang in languages if lang in self.known]
        if known and known != list(self.languages):
            self.identifier.set_languages(known)
            self.languages = tuple(known)
        language, probability = self.identifier.classify(text)
        return language, round(float(probability) * 100, 2)
