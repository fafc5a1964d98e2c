"""Calibration through the HTTP API: the default method, the fallbacks and what the responses say, checked
against the numpy reference on a hand-made, deliberately language-biased encoder."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from encoder.calibration import Calibrator, LanguageStatistics
from indexes.languages import Detection
from tests.app_fixtures import GridEncoder, make_settings, wait_ready, write_jsonl

TOPICS, LANGUAGES = ["A", "B", "C"], ["de", "en", "ja"]
ENCODER = GridEncoder(TOPICS, LANGUAGES)  # language weight 0.8 > topic weight 0.6: raw ranking is biased


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibration")
    rows = [{"id": f"{t}-{lang}", "text": f"{t} {lang}", "language": lang, "group": t}
            for t in TOPICS for lang in LANGUAGES]
    seed = write_jsonl(tmp / "grid.jsonl", rows)
    with TestClient(create_app(make_settings(tmp, tmp / "no-artifact", seed), encoder=ENCODER)) as client:
        wait_ready(client)
        yield client


def reference(method: str) -> Calibrator:
    texts = {lang: [f"{t} {lang}" for t in TOPICS] for lang in LANGUAGES}
    stats = LanguageStatistics.from_vectors({lang: ENCODER.encode(t, "passage") for lang, t in texts.items()})
    return Calibrator.from_statistics(method, None, stats, ENCODER.dim)


def search(client, **body) -> dict:
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.json()
    return response.json()


def test_search_is_calibrated_by_default_and_says_how(client):
    found = search(client, query="A de", query_language="de", k=3)
    assert {hit["id"] for hit in found["results"]} == {"A-de", "A-en", "A-ja"}  # meaning, not language
    calibration = found["calibration"]
    assert calibration["requested"] == calibration["method"] == "center" and calibration["note"] is None
    assert calibration["statistics"] == {lang: {"source": "collection", "count": 3} for lang in LANGUAGES}


def test_calibration_none_reproduces_the_raw_ranking(client):
    found = search(client, query="A de", query_language="de", k=3, calibration="none")
    assert [hit["id"] for hit in found["results"]][:1] == ["A-de"]
    assert {hit["id"] for hit in found["results"][1:]} == {"B-de", "C-de"}  # the language wins
    query = ENCODER.vector("A de")
    for hit in found["results"]:
        assert hit["score"] == pytest.approx(float(ENCODER.vector(hit["text"]) @ query), abs=1e-6)
    assert found["calibration"]["method"] == "none"


@pytest.mark.parametrize("method", ["center", "subspace"])
def test_served_scores_equal_the_numpy_reference(client, method):
    calibrator = reference(method)
    found = search(client, query="B ja", query_language="ja", k=9, calibration=method)
    query = calibrator.transform(ENCODER.encode(["B ja"], "query"), "ja")[0]
    for hit in found["results"]:
        expected = calibrator.transform(ENCODER.encode([hit["text"]], "passage"), hit["language"])[0] @ query
        assert hit["score"] == pytest.approx(float(expected), abs=1e-5)
    assert [hit["score"] for hit in found["results"]] == sorted((hit["score"] for hit in found["results"]), reverse=True)


def test_a_language_without_statistics_falls_back_and_says_so(client):
    found = search(client, query="A de", query_language="sw", k=3)
    assert found["calibration"]["requested"] == "center" and found["calibration"]["method"] == "subspace"
    assert "'sw'" in found["calibration"]["note"]


class UnsureDetector:
    languages = frozenset(LANGUAGES)
    min_confidence = 0.55

    def detect(self, text):
        return Detection(None, 0.4, "de")

    def detect_many(self, texts):
        return [self.detect(text) for text in texts]

    def with_languages(self, languages):
        return self


@pytest.fixture
def unsure(client, monkeypatch):
    monkeypatch.setattr(client.app.state.service, "detector", UnsureDetector())


def test_an_unsure_query_language_falls_back_and_says_so(client, unsure):
    found = search(client, query="A de", k=3)
    assert found["query_language"] is None and found["calibration"]["method"] == "subspace"
    assert "detected reliably" in found["calibration"]["note"]
    assert found["language_detection"] == {"language": None, "confidence": 0.4, "best_guess": "de"}


def test_embeddings_take_a_calibration_and_name_it(client):
    raw = client.post("/v1/embeddings", json={"input": ["A de"], "input_type": "passage"}).json()
    assert raw["calibration"]["method"] == "none"  # embeddings are the model's vectors unless asked
    np.testing.assert_allclose(raw["data"][0]["embedding"], ENCODER.vector("A de"), atol=1e-6)
    calibrated = client.post("/v1/embeddings", json={"input": ["A de"], "input_type": "passage", "language": "de",
                                                     "calibration": "center"})
    assert calibrated.status_code == 200, calibrated.json()
    body = calibrated.json()
    expected = reference("center").transform(ENCODER.encode(["A de"], "passage"), "de")[0]
    np.testing.assert_allclose(body["data"][0]["embedding"], expected, atol=1e-5)
    assert body["calibration"]["method"] == "center" and body["data"][0]["language"] == "de"
    given = client.post("/v1/embeddings", json={"input": ["A de"], "calibration": "subspace"}).json()
    expected = reference("subspace").transform(ENCODER.encode(["A de"], "query"), None)[0]
    np.testing.assert_allclose(given["data"][0]["embedding"], expected, atol=1e-5)


def test_embeddings_of_an_unsure_language_fall_back(client, unsure):
    body = client.post("/v1/embeddings", json={"input": ["A de"], "calibration": "center"}).json()
    assert body["calibration"]["method"] == "subspace" and "reliably" in body["calibration"]["note"]


def test_audit_reports_raw_and_calibrated_side_by_side(client):
    queries = [{"text": f"{t} {lang}", "language": lang, "group": t} for t in TOPICS for lang in LANGUAGES]
    report = client.post("/audit", json={"k": 3, "queries": queries}).json()
    assert report["calibration"]["method"] == "center" and report["calibration"]["queries_fallback"] == 0
    raw, calibrated = report["compare"]["none"], report["compare"]["center"]
    assert calibrated["rank_distance"] < raw["rank_distance"]
    assert calibrated["map"] > raw["map"]
    assert report["rank_distance"] == calibrated["rank_distance"]  # the top level is what /search serves
    assert calibrated["same_language_first"]["rate"] < raw["same_language_first"]["rate"] == 1.0
    raw_only = client.post("/audit", json={"k": 3, "queries": queries, "calibration": "none"}).json()
    assert raw_only["rank_distance"] == raw["rank_distance"] and list(raw_only["compare"]) == ["none"]


def test_metrics_count_searches_by_method(client):
    search(client, query="C en", query_language="en", calibration="subspace")
    text = client.get("/metrics").text
    assert 'babelsearch_searches_total{method="subspace"}' in text
    assert 'babelsearch_searches_total{method="center"}' in text


def test_an_unknown_method_is_a_clear_422(client):
    response = client.post("/search", json={"query": "A de", "calibration": "magic"})
    assert response.status_code == 422 and "calibration" in str(response.json())


def test_info_names_the_default_method(client):
    info = client.get("/info")
    if info.status_code == 404:
        pytest.skip("no /info endpoint")
    assert info.json()["calibration"]["default"] == "center"


def test_a_filter_naming_a_language_without_documents_says_so(client):
    found = search(client, query="A de", query_language="de", languages=["de", "fr"])
    assert found["warnings"] == ["languages: the collection has no documents in 'fr'"]
    assert {hit["language"] for hit in found["results"]} == {"de"}
    assert search(client, query="A de", query_language="de", languages=["de"])["warnings"] == []


def test_the_extra_languages_setting_is_checked_and_normalised(tmp_path):
    from app.config import Settings

    assert Settings(languages=["FR", "pt-BR"]).languages == ["fr", "pt"]
    with pytest.raises(ValueError, match="ISO 639-1"):
        Settings(languages=["xx"])
