"""Restricted, thresholded language detection (real lingua, restricted sets only: no 75-language load)."""
from __future__ import annotations

import pytest

import indexes.languages as languages
from indexes.languages import (
    DEFAULT_MIN_CONFIDENCE,
    Detection,
    LanguageDetector,
    default_detector,
    detect_language,
    detect_languages,
    set_default_detector,
    warm_up_language_detector,
)

XQUAD = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(XQUAD)


@pytest.fixture
def installed(detector):
    previous = languages._detector
    set_default_detector(detector)
    yield detector
    set_default_detector(previous)


def test_short_english_words_do_not_open_new_shards(detector):
    # With all 75 languages: "moon" → af, "hello" → st. Restricted and thresholded: en or unknown.
    for word in ("moon", "hello", "Hello!", "Moon"):
        detection = detector.detect(word)
        assert detection.language in {"en", None}, (word, detection)
        assert detection.best_guess in detector.languages
    assert detector.detect("Where is the train station?").language == "en"


def test_hindi_is_hindi(detector):
    for text in ("भारत की राजधानी क्या है?", "मेरा नाम राम है और मैं दिल्ली में रहता हूँ"):
        assert detector.detect(text) == Detection("hi", 1.0, "hi")  # Devanagari: hi is the only one allowed
    # Even with Marathi allowed, a Hindi sentence is not labelled mr.
    assert LanguageDetector(["hi", "mr", "en"]).detect("मेरा नाम राम है और मैं दिल्ली में रहता हूँ").language == "hi"


@pytest.mark.parametrize("text", [
    "Habari yako, rafiki yangu?",  # Swahili (all 75 languages: sn)
    "Watoto wanacheza mpira shuleni leo",
    "Je voudrais un café, s'il vous plaît.",
    "東京には何人住んでいますか？",  # kana: a script no allowed language uses
    "기차역이 어디에 있어요?",
])
def test_language_outside_the_set_is_never_labelled_outside_it(detector, text):
    detection = detector.detect(text)
    assert detection.language is None or detection.language in detector.languages
    assert detection.best_guess is None or detection.best_guess in detector.languages
    assert detection.language is None  # these are all below the threshold or unscorable


@pytest.mark.parametrize("text", [",", "…!?", "123 !!", "", "   ", "\n\t", "42", "🙂"])
def test_no_letters_is_unknown(detector, text):
    assert detector.detect(text) == Detection(None, 0.0, None)


def test_threshold_falls_back_to_unknown(detector):
    sure = detector.detect("Wo ist der Bahnhof?")
    assert sure.language == "de" and DEFAULT_MIN_CONFIDENCE <= sure.confidence < 0.99
    strict = LanguageDetector(XQUAD, min_confidence=0.99).detect("Wo ist der Bahnhof?")
    assert (strict.language, strict.best_guess) == (None, "de")
    assert strict.confidence == pytest.approx(sure.confidence)  # lingua's sums are not bit-reproducible
    assert LanguageDetector(XQUAD, min_confidence=0.0).detect("hello").language == "es"  # best guess, unthresholded
    with pytest.raises(ValueError, match="min_confidence"):
        LanguageDetector(XQUAD, min_confidence=1.5)


def test_script_decides_mixed_script_text(detector):
    # Latin-script names inside a Greek / Russian / Thai / Chinese question do not make it English.
    assert detector.detect("Πόσα tackles κατέγραψε ο Luke Kuechly;").language == "el"
    assert detector.detect("Что такое Engineering News-Record?").language == "ru"
    assert detector.detect("ใครเป็นผู้ก่อตั้ง Oracle Corporation?").language == "th"
    assert detector.detect("Energiprojekt AB发动机有多少个气缸?").language == "zh"
    # ... but a few non-Latin letters in an English sentence do not make it Chinese.
    assert detector.detect("Mao Zedong (毛泽东) was a Chinese leader").language == "en"


def test_detect_many_matches_detect(detector):
    texts = ["Wo ist der Bahnhof?", "hello", ",", "火车站在哪里？", "Tren istasyonu nerede?", 7]
    many = detector.detect_many(texts)
    one = [detector.detect(t) if isinstance(t, str) else Detection(None, 0.0, None) for t in texts]
    assert [(d.language, d.best_guess) for d in many] == [(d.language, d.best_guess) for d in one]
    assert [d.confidence for d in many] == pytest.approx([d.confidence for d in one])
    assert detector.detect_many([]) == []


def test_languages_are_normalized_and_validated():
    assert LanguageDetector(["EN", "de-AT", "pt_BR"]).languages == frozenset({"en", "de", "pt"})
    with pytest.raises(ValueError, match="unknown language code"):
        LanguageDetector(["en", "xx"])
    with pytest.raises(ValueError, match="at least one"):
        LanguageDetector([])


def test_growing_the_set_is_a_new_cheap_detector(detector):
    assert detector.with_languages(["en", "DE"]) is detector
    grown = detector.with_languages(["fr"])
    assert grown.languages == detector.languages | {"fr"} and grown.min_confidence == detector.min_confidence
    assert detector.detect("Où se trouve la gare de Lyon, s'il vous plaît ?").language != "fr"
    assert grown.detect("Où se trouve la gare de Lyon, s'il vous plaît ?").language == "fr"


def test_single_language_set():
    # Nothing to choose among: en or unknown (lingua scores some short texts 0 with one language).
    only_english = LanguageDetector(["en"])
    assert only_english.detect("Where is the train station?").language == "en"
    assert only_english.detect("hello").language in {"en", None}
    assert only_english.detect("Ελλάδα") == Detection(None, 0.0, None)


def test_module_functions_delegate_to_the_default_detector(installed):
    assert default_detector() is installed
    assert detect_language("Wo ist der Bahnhof?") == "de"
    assert detect_language("hello") is None and detect_language("12345 !!") is None
    assert detect_languages(["火车站在哪里？", "…", "Где находится вокзал?"]) == ["zh", None, "ru"]
    assert detect_languages([]) == []
    warm_up_language_detector()
    assert languages._detector is installed


def test_default_detector_is_built_lazily_for_all_languages():
    previous = languages._detector
    try:
        set_default_detector(None)
        built = default_detector()  # building does not load the 75 languages' models: that is lazy
        assert built is default_detector() and built.languages == languages.KNOWN_LANGUAGES
        assert built.min_confidence == languages.DOCUMENT_MIN_CONFIDENCE  # for documents (and the old callers)
    finally:
        set_default_detector(previous)


def test_documents_are_detected_among_all_languages_with_the_served_script_preferred():
    from indexes.languages import detect_documents

    served = LanguageDetector(["de", "en", "ja", "hi"])
    french, hindi = "La tour Eiffel se trouve à Paris, au bord de la Seine.", "भारत की राजधानी नई दिल्ली है और यह एक बड़ा शहर है।"
    found = detect_documents([french, hindi, "hello", "12345"], served)
    assert found[0].language == "fr"  # not served, but French: its own shard, not a German one
    assert found[1].language == "hi"  # the served language of its script
    assert found[2].language is None and found[3].language is None  # too unsure / nothing to tell
    assert detect_documents([french])[0].language == "fr"
