"""Language codes and detection (lingua, offline, high-accuracy mode).

Collections shard by ISO 639-1 code, so every code stored or requested must be one lingua knows:
the same detector labels documents without a language and queries, and the two must agree.
"""
from __future__ import annotations

import threading
from typing import Sequence

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

KNOWN_LANGUAGES: frozenset[str] = frozenset(language.iso_code_639_1.name.lower() for language in Language.all())
LANGUAGE_NAMES: dict[str, str] = {
    language.iso_code_639_1.name.lower(): language.name.title() for language in Language.all()
}

_detector: LanguageDetector | None = None
_detector_lock = threading.Lock()


def _get_detector() -> LanguageDetector:
    # Built once, on first use: high-accuracy mode (lingua's default) is the one that is right on short
    # texts such as queries; its per-language models load lazily and the detector is safe to share.
    global _detector
    if _detector is None:
        with _detector_lock:
            if _detector is None:
                _detector = LanguageDetectorBuilder.from_all_languages().build()
    return _detector


def _code(language: Language | None) -> str | None:
    return language.iso_code_639_1.name.lower() if language is not None else None


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language, or None when it cannot be told (digits, symbols, empty)."""
    if not text or not text.strip():
        return None
    return _code(_get_detector().detect_language_of(text))


def detect_languages(texts: Sequence[str]) -> list[str | None]:
    """``detect_language`` for many texts at once (lingua spreads them over its own thread pool)."""
    if not texts:
        return []
    return [_code(language) for language in _get_detector().detect_languages_in_parallel_of(list(texts))]


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


# One short text per script family: detecting them loads the models a later call would otherwise load lazily.
_WARM_UP_TEXTS = (
    "How many people live in Berlin?", "Сколько людей живёт в Берлине?", "كم عدد سكان برلين؟",
    "बर्लिन में कितने लोग रहते हैं?", "柏林有多少人口？", "ベルリンには何人住んでいますか？", "베를린에는 몇 명이 살고 있나요?",
    "Πόσοι άνθρωποι ζουν στο Βερολίνο;", "כמה אנשים גרים בברלין?", "กรุงเบอร์ลินมีประชากรเท่าไร",
)


def warm_up_language_detector() -> None:
    """Load the detector and its language models now (tens of seconds, ~1.3 GB resident) instead of on the
    first call; a service can run this in a background thread at startup."""
    detect_languages(list(_WARM_UP_TEXTS))
