"""detection=served (the service's default): documents without a language are labelled among the languages
served, a text in another language is refused (not filed in a wrong shard), and the all-language detector
(~1.3 GB) is never built."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from indexes.languages import KNOWN_LANGUAGES, LanguageDetector, NoLanguages, detect_documents
from tests.app_fixtures import make_settings, sample_rows, wait_ready, write_jsonl

KEY = "detection-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FRENCH = "La tour Eiffel se trouve à Paris, au bord de la Seine, et attire des millions de visiteurs."
GERMAN = "Der Rhein ist einer der längsten Flüsse Europas und fließt durch mehrere Länder."


def served_app(tmp_path, tiny_artifact, rows=None):
    seed = write_jsonl(tmp_path / "seed.jsonl", rows) if rows is not None else None
    return create_app(make_settings(tmp_path, tiny_artifact, seed, api_key=KEY, detection="served"))


def labelled_rows() -> list[dict]:
    return [row for row in sample_rows() if row.get("language")]  # de, en, ja; not the unlabelled French one


def test_served_is_the_default_and_a_bad_value_is_named():
    assert Settings().detection == "served"
    with pytest.raises(ValidationError, match="detection"):
        Settings(detection="some")


def test_a_document_in_a_served_language_is_labelled_and_another_is_refused(tmp_path, tiny_artifact):
    with TestClient(served_app(tmp_path, tiny_artifact, labelled_rows())) as client:
        wait_ready(client)
        before = client.get("/readyz").json()["documents"]
        added = client.post("/documents", json=[{"id": "rhein", "text": GERMAN}], headers=AUTH)
        assert added.status_code == 200 and added.json()["languages"] == {"de": 1}
        refused = client.post("/documents", json=[{"id": "paris", "text": FRENCH}, {"id": "rhein2", "text": GERMAN}],
                              headers=AUTH)
        assert refused.status_code == 422, refused.json()
        detail = refused.json()["detail"]
        assert "'paris' (looks like fr, which this collection does not serve yet)" in detail
        assert "give them a 'language'" in detail
        assert client.get("/readyz").json()["documents"] == before + 1  # nothing of the refused request
        # given its language, French is served from then on, and detected
        assert client.post("/documents", json=[{"id": "paris", "text": FRENCH, "language": "fr"}],
                           headers=AUTH).status_code == 200
        again = client.post("/documents", json=[{"id": "paris2", "text": FRENCH}], headers=AUTH)
        assert again.status_code == 200 and again.json()["languages"] == {"fr": 1}
        detector = client.app.state.service.detector
    assert detector.languages == {"de", "en", "fr", "ja"} and detector.languages != KNOWN_LANGUAGES


def test_nothing_served_yet_means_unknown_without_loading_any_detector(tmp_path, tiny_artifact):
    with TestClient(served_app(tmp_path, tiny_artifact)) as client:  # empty, and the tiny model has no statistics
        wait_ready(client)
        assert isinstance(client.app.state.service.detector, NoLanguages)
        refused = client.post("/documents", json=[{"id": "rhein", "text": GERMAN}], headers=AUTH)
        assert refused.status_code == 422 and "(no language is served yet)" in refused.json()["detail"]
        found = client.post("/search", json={"query": GERMAN}).json()
        assert found["results"] == [] and found["query_language"] is None
        assert client.post("/documents", json=[{"id": "rhein", "text": GERMAN, "language": "de"}],
                           headers=AUTH).status_code == 200
        assert client.app.state.service.detector.languages == {"de"}


def test_detect_documents_among_served_vetoes_other_languages():
    served = LanguageDetector(["de", "en", "ja", "hi"])
    hindi = "भारत की राजधानी नई दिल्ली है और यह एक बड़ा शहर है।"
    found = detect_documents([FRENCH, GERMAN, hindi, "12345"], served, among="served")
    assert (found[0].language, found[0].best_guess) == (None, "fr")  # French: unknown, not German or English
    assert [f.language for f in found[1:]] == ["de", "hi", None]
    assert [f.language for f in detect_documents([FRENCH], None, among="served")] == [None]
    with pytest.raises(ValueError, match="among"):
        detect_documents([FRENCH], served, among="most")


def test_warm_up_loads_by_use_and_detects_as_before():
    languages = ["ar", "de", "en", "es", "fr", "hi", "it", "ja", "pt", "ru", "tr", "zh"]
    warm = LanguageDetector(languages)
    warm.warm_up()
    texts = ["hello", "Wo ist der Bahnhof?", "Что такое фотосинтез?", "光合作用是什么", "كيف حالك", FRENCH]
    labels = lambda found: [(f.language, f.best_guess, round(f.confidence, 9)) for f in found]  # noqa: E731
    assert labels(warm.detect_many(texts)) == labels(LanguageDetector(languages).detect_many(texts))
