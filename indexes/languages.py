"""Language codes and detection (lingua, offline).

Collections shard by ISO 639-1 code, so every code stored or requested must be one lingua knows:
the same detector labels documents without a language and queries, and the two must agree.

``LanguageDetector`` chooses only among a given set of languages (the ones the model and the collection
serve) and answers "unknown" (``Detection.language is None``) below a confidence threshold: a wrong label
files a passage in the wrong shard or calibrates a query with the wrong language, "unknown" lets the caller
fall back. Threshold and mode were chosen with bench/bench_languages.py (docs/languages.md).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

from lingua import IsoCode639_1, Language
from lingua import LanguageDetector as _Lingua
from lingua import LanguageDetectorBuilder

KNOWN_LANGUAGES: frozenset[str] = frozenset(language.iso_code_639_1.name.lower() for language in Language.all())
LANGUAGE_NAMES: dict[str, str] = {
    language.iso_code_639_1.name.lower(): language.name.title() for language in Language.all()
}

# Below this, lingua's confidence (its probability of the best allowed language; the allowed ones sum to 1)
# answers "unknown". Chosen on NTREX-128 (max correct − 2×wrong over sentences and 1-3-word queries, every
# language's sentence accuracy >= 0.97), confirmed on XQuAD-R: docs/languages.md. ("hello" scores es 0.53,
# en 0.33 among the 11 XQuAD-R languages: unknown.)
DEFAULT_MIN_CONFIDENCE = 0.55
# Documents without a language are labelled among *all* languages (a wrong shard is worse than a new one)
# with this lower threshold: among 75 languages a plain French sentence can score 0.45. Measured on NTREX
# sentences (docs/languages.md): 0.990 right, 0.003 wrong; single words: 0.600 right, 0.067 wrong.
DOCUMENT_MIN_CONFIDENCE = 0.3
# One text per script that several lingua languages share, each with words of 5+ letters (lingua's largest
# n-grams): detecting them loads every model that detection among any allowed set can need
# (LanguageDetector.warm_up). Scripts one language alone uses (Greek, Thai, Hangul, ...) need no models.
WARM_UP_PROBES = ("hello world", "привет мир", "سلام دنیا", "नमस्ते दुनिया", "你好世界", "こんにちは世界")
# lingua's cost grows with the text; its verdict does not change past a few sentences.
MAX_DETECT_CHARS = 2000
# A text whose letters are at least this share non-Latin is decided on its non-Latin letters alone: Greek,
# Russian, Thai or Chinese questions quote Latin-script names ("Πόσα tackles κατέγραψε ο Luke Kuechly;"), and
# lingua, left to itself, labels them en. XQuAD-R and NTREX texts in non-Latin languages that hold Latin
# letters have a non-Latin share of at least 0.1 (zh), 0.17 (th), 0.23 (el), 0.28 (ru, ar).
NON_LATIN_SHARE = 0.2
_LETTER = re.compile(r"[^\W\d_]")
_LATIN = re.compile("[A-Za-z\u00aa\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\u2c60-\u2c7f"
                    "\ua720-\ua7ff\uff21-\uff3a\uff41-\uff5a]")


@dataclass(frozen=True)
class Detection:
    """``language``: ISO 639-1 code, None when unsure or undeterminable (no letters, or a script none of the
    allowed languages uses). ``confidence``: lingua's confidence of ``best_guess``, 0..1, among the allowed
    languages (1.0 when the script decides, e.g. Thai or Greek). ``best_guess``: the top allowed language
    even when below the threshold (None when nothing could be scored)."""

    language: str | None
    confidence: float
    best_guess: str | None


def _lingua_language(code: str) -> Language:
    return Language.from_iso_code_639_1(getattr(IsoCode639_1, normalize_language(code).upper()))


def _code(language: Language) -> str:
    return language.iso_code_639_1.name.lower()


def _text_to_score(text: str) -> str:
    """``text``, capped, or its non-Latin part where that part is a large enough share of its letters."""
    text = text[:MAX_DETECT_CHARS]
    latin = len(_LATIN.findall(text))
    if latin:
        letters = len(_LETTER.findall(text))
        if letters > latin and (letters - latin) >= NON_LATIN_SHARE * letters:
            return _LATIN.sub("", text)
    return text


class LanguageDetector:
    """Detection restricted to ``languages`` (ISO 639-1 codes; None: all 75 lingua knows) with a threshold.

    Built lazily on first use (thread-safe); one instance is safe to share between threads. lingua keeps its
    language models in a process-wide cache shared by all detectors, so building a second detector for a
    grown set (``with_languages``) loads only the added languages' models (~0.2 s and tens of MB each in
    high-accuracy mode); the old detector can simply be dropped.
    """

    def __init__(self, languages: Iterable[str] | None = None, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 low_accuracy: bool = False):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence!r}")
        self.languages: frozenset[str] = (
            KNOWN_LANGUAGES if languages is None else frozenset(normalize_language(code) for code in languages)
        )
        if not self.languages:
            raise ValueError("languages: at least one language is needed")
        self.min_confidence = float(min_confidence)
        self.low_accuracy = low_accuracy
        self._detector: _Lingua | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"LanguageDetector({len(self.languages)} languages, min_confidence={self.min_confidence}, "
                f"low_accuracy={self.low_accuracy})")

    def with_languages(self, languages: Iterable[str]) -> LanguageDetector:
        """A detector for this set plus ``languages``, same settings (``self`` when nothing is new)."""
        grown = self.languages | {normalize_language(code) for code in languages}
        if grown == self.languages:
            return self
        return LanguageDetector(grown, self.min_confidence, self.low_accuracy)

    def _build(self, preload: bool) -> _Lingua:
        builder = LanguageDetectorBuilder.from_languages(*map(_lingua_language, sorted(self.languages)))
        if self.low_accuracy:
            builder = builder.with_low_accuracy_mode()
        return (builder.with_preloaded_language_models() if preload else builder).build()

    def _lingua(self) -> _Lingua:
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    self._detector = self._build(preload=False)  # models load on first need
        return self._detector

    def warm_up(self) -> None:
        """Load now the models detection can need (otherwise loaded on first need, holding the GIL); they
        go to lingua's shared cache, so a detector already built benefits too.

        Loaded by use, not all preloaded: lingua decides a text whose script only one allowed language uses
        by rule, without models, and loads models only for languages that share the text's script. One
        probe per shared script (WARM_UP_PROBES) loads exactly those: for the demo's 12 languages
        ~190 MB (the Latin-script ones) instead of ~270 MB (docs/languages.md)."""
        self._lingua().compute_language_confidence_values_in_parallel(list(WARM_UP_PROBES))

    def _decide(self, values: Sequence) -> Detection:
        if not values or values[0].value <= 0.0:  # no letters, or a script no allowed language uses
            return Detection(None, 0.0, None)
        best, confidence = _code(values[0].language), float(values[0].value)
        return Detection(best if confidence >= self.min_confidence else None, confidence, best)

    def detect(self, text: str) -> Detection:
        """The language of ``text`` among ``languages``, or None below ``min_confidence``."""
        if not isinstance(text, str) or not text.strip():
            return Detection(None, 0.0, None)
        return self._decide(self._lingua().compute_language_confidence_values(_text_to_score(text)))

    def detect_many(self, texts: Sequence[str]) -> list[Detection]:
        """``detect`` for many texts (lingua spreads them over its own thread pool)."""
        texts = [_text_to_score(text) if isinstance(text, str) else "" for text in texts]
        if not texts:
            return []
        return [self._decide(values) for values in self._lingua().compute_language_confidence_values_in_parallel(texts)]


class NoLanguages:
    """The detector of a service that serves no language yet and detects only among served ones: every
    text is unknown, and nothing is loaded."""

    languages: frozenset[str] = frozenset()
    min_confidence = DEFAULT_MIN_CONFIDENCE
    low_accuracy = False

    def __repr__(self) -> str:
        return "NoLanguages()"

    def detect(self, text: str) -> Detection:
        return Detection(None, 0.0, None)

    def detect_many(self, texts: Sequence[str]) -> list[Detection]:
        return [Detection(None, 0.0, None) for _ in texts]

    def warm_up(self) -> None:
        pass

    def with_languages(self, languages: Iterable[str]) -> "LanguageDetector | NoLanguages":
        languages = list(languages)
        return LanguageDetector(languages) if languages else self


# --- module-level default, used by detect_language / detect_languages ------------------------------------------

# Today's behaviour until a service installs its restricted detector: all languages, no threshold.
_detector: LanguageDetector | None = None
_detector_lock = threading.Lock()


def default_detector() -> LanguageDetector:
    """The detector ``detect_language`` and ``detect_languages`` use (built on first call if none was set)."""
    global _detector
    if _detector is None:
        with _detector_lock:
            if _detector is None:
                _detector = LanguageDetector(None, min_confidence=DOCUMENT_MIN_CONFIDENCE)
    return _detector


def set_default_detector(detector: LanguageDetector | None) -> None:
    """Make ``detector`` the module default (None: back to the document detector, built lazily)."""
    global _detector
    with _detector_lock:
        _detector = detector


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language per the default detector, or None when it cannot be told
    (digits, symbols, empty) or the detector is unsure."""
    return default_detector().detect(text).language


def detect_languages(texts: Sequence[str]) -> list[str | None]:
    """``detect_language`` for many texts at once."""
    return [detection.language for detection in default_detector().detect_many(list(texts))]


def mostly_non_latin(text: str) -> bool:
    letters = len(_LETTER.findall(text[:MAX_DETECT_CHARS]))
    return letters > 0 and letters - len(_LATIN.findall(text[:MAX_DETECT_CHARS])) >= NON_LATIN_SHARE * letters


# ``detect_documents(..., among="served")``: the served detector labels a document, and this all-language
# detector in low-accuracy mode only vetoes: a text it places, with at least this confidence, in a language
# that is not served is "unknown". Low accuracy holds ~80 MB of models and loads in ~1 s, against ~1.3 GB and
# 13-21 s for all 75 languages in high accuracy. Threshold: docs/languages.md (bench_document_languages.py).
GUARD_MIN_CONFIDENCE = 0.5
_guard: LanguageDetector | None = None


def guard_detector() -> LanguageDetector:
    """All languages, low accuracy: what ``detect_documents(among="served")`` vetoes with (built once)."""
    global _guard
    if _guard is None:
        with _detector_lock:
            if _guard is None:
                _guard = LanguageDetector(None, min_confidence=GUARD_MIN_CONFIDENCE, low_accuracy=True)
    return _guard


DOCUMENT_AMONG = ("all", "served")


def detect_documents(texts: Sequence[str], served: LanguageDetector | None = None,
                     among: str = "all") -> list[Detection]:
    """Languages of documents added without one.

    ``among="all"``: among all languages (``default_detector``), so a document in a language not served yet
    gets its own shard rather than a wrong one. Except that a text written mostly in a non-Latin script
    takes the served language of that script when ``served`` (the languages already served) is sure of it:
    lingua labels 91 of the 1,190 XQuAD-R Hindi questions Marathi among all languages, none when Hindi is
    served and Marathi is not.

    ``among="served"`` (what the service does, to stay lean): only the languages of ``served``; a text
    that ``guard_detector`` places in another language is unknown, its ``best_guess`` that language (the
    caller refuses it: give it a language to add one). Nothing served: every text is unknown."""
    if among not in DOCUMENT_AMONG:
        raise ValueError(f"among must be one of {DOCUMENT_AMONG}, got {among!r}")
    texts = list(texts)
    if among == "served":
        if served is None:
            return [Detection(None, 0.0, None) for _ in texts]
        vetoes = guard_detector().detect_many(texts)
        return [Detection(None, veto.confidence, veto.language)
                if veto.language is not None and veto.language not in served.languages else found
                for found, veto in zip(served.detect_many(texts), vetoes)]
    broad = default_detector().detect_many(texts)
    if served is None:
        return broad
    scripted = [i for i, text in enumerate(texts) if mostly_non_latin(text)]
    for i, found in zip(scripted, served.detect_many([texts[i] for i in scripted])):
        if found.language is not None:
            broad[i] = found
    return broad


def normalize_language(code: object) -> str:
    """Lower-case ISO 639-1 code lingua knows; accepts 'EN', ' en ', 'zh-CN', 'pt_BR'. Raises ValueError."""
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"language must be a non-empty ISO 639-1 code such as 'en', got {code!r}")
    normalized = code.strip().lower().replace("_", "-")
    primary = normalized.split("-", 1)[0]
    if primary not in KNOWN_LANGUAGES:
        raise ValueError(
            f"unknown language code {code!r}: expected an ISO 639-1 code lingua knows, "
            f"one of {', '.join(sorted(KNOWN_LANGUAGES))}"
        )
    return primary


def warm_up_language_detector(detector: LanguageDetector | None = None) -> None:
    """Load ``detector`` (default: the module default) and its language models now instead of on the first
    call; a service can run this in a background thread at startup. All 75 languages: ~10 s and ~1.3 GB
    resident; the 11 XQuAD-R languages: ~2 s and ~0.3 GB (docs/languages.md)."""
    (detector or default_detector()).warm_up()
