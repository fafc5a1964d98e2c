"""``/audit``: numbers worked out by hand on a hand-made encoder, and equal to a direct computation with
``evaluation.metrics`` on the tiny model; formats and bad input."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from encoder import OnnxEncoder
from evaluation.metrics import average_precision, macro_by_language, rank_distance, ranks_of_relevant
from tests.app_fixtures import GridEncoder, make_settings, sample_rows, wait_ready, write_jsonl

TOPICS, LANGUAGES = ["A", "B"], ["de", "en", "ja"]


def grid_client(tmp_path, topic_weight=0.6, lang_weight=0.8, **settings):
    rows = [{"id": f"{t}-{lang}", "text": f"{t} {lang}", "language": lang, "group": t}
            for t in TOPICS for lang in LANGUAGES]
    seed = write_jsonl(tmp_path / "grid.jsonl", rows)
    encoder = GridEncoder(TOPICS, LANGUAGES, topic_weight, lang_weight)
    settings.setdefault("calibration", "none")  # the numbers below are worked out for the raw ranking
    return TestClient(create_app(make_settings(tmp_path, tmp_path / "unused-model", seed, **settings), encoder=encoder))


def test_biased_ranking_by_hand(tmp_path):
    # Query "A de" scores: A-de 1, B-de .64 (same language, wrong topic), A-en = A-ja .36, B-en = B-ja 0.
    # Its translations (group A) sit at ranks 1, 3, 4: rank distance 3, AP (1/1 + 2/3 + 3/4) / 3.
    with grid_client(tmp_path) as client:
        wait_ready(client)
        report = client.post("/audit", json={"k": 2, "queries": [
            {"text": "A de", "language": "de", "group": "A"},
            {"text": "B en", "language": "en", "group": "B"},
        ]}).json()
    ap = (1 + 2 / 3 + 3 / 4) / 3
    assert report["mode"] == "queries" and report["n_queries"] == 2 and report["k"] == 2
    assert report["rank_distance"] == pytest.approx(3.0)
    assert report["map"] == pytest.approx(ap)
    assert report["recall_at_k"] == pytest.approx(1 / 3)
    assert report["same_language_first"] == {"rate": 1.0, "chance": pytest.approx(1 / 3), "n_queries": 2}
    # top-2 of "A de" is [de, de], of "B en" [en, en]: half German, half English, no Japanese
    assert report["language_share"]["de"] == {"top_k_share": 0.5, "collection_share": pytest.approx(1 / 3),
                                              "ratio": pytest.approx(1.5)}
    assert report["language_share"]["ja"]["top_k_share"] == 0.0
    assert set(report["per_language"]) == {"de", "en"}
    assert report["per_language"]["de"] == {
        "n_queries": 1, "rank_distance": 3.0, "map": pytest.approx(ap), "recall_at_k": pytest.approx(1 / 3),
        "own_language_top_k_share": 1.0, "collection_share": pytest.approx(1 / 3),
        "same_language_first": 1.0, "same_language_chance": pytest.approx(1 / 3),
        "top_k_languages": {"de": 1.0, "en": 0.0, "ja": 0.0},  # the heatmap's row: its top 2 are German
    }
    assert report["collection"] == {"documents": 6, "languages": {"de": 2, "en": 2, "ja": 2}}


def test_unbiased_ranking_by_hand(tmp_path):
    # Topic outweighs language: "A de" ranks A-de 1, A-en = A-ja .64 (ranks 2, 3), B-de .36.
    with grid_client(tmp_path, topic_weight=0.8, lang_weight=0.6) as client:
        wait_ready(client)
        report = client.post("/audit", json={"k": 2, "queries": [{"text": "A de", "language": "de", "group": "A"}]})
        only_translations = client.post("/audit", json={"queries": [
            {"text": "A de", "language": "de", "relevant_ids": ["A-en", "A-ja"]}]}).json()
    report = report.json()
    assert report["rank_distance"] == 2.0 and report["map"] == pytest.approx(1.0)
    assert report["recall_at_k"] == pytest.approx(2 / 3)
    assert report["language_share"]["de"]["top_k_share"] == 0.5  # top-2: A-de and one translation
    # relevant_ids win over the group: ranks 2, 3 (A-de itself is now a non-relevant rank 1);
    # without a German relevant document, same-language-first does not apply
    assert only_translations["rank_distance"] == 1.0
    assert only_translations["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert only_translations["same_language_first"] == {"rate": None, "chance": None, "n_queries": 0}


def test_self_audit_by_hand(tmp_path):
    # Each document queries for its two translations; it is itself left out of the ranking. For "A de":
    # B-de .64 (rank 1), A-en = A-ja .36 (ranks 2, 3): rank distance 1, AP (1/2 + 2/3) / 2, top-1 German.
    with grid_client(tmp_path) as client:
        wait_ready(client)
        report = client.post("/audit", json={"k": 1}).json()
        empty_body = client.post("/audit").json()
    assert report["mode"] == "self" and report["n_queries"] == 6 and report["n_available_queries"] == 6
    assert report["rank_distance"] == 1.0
    assert report["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert report["recall_at_k"] == 0.0
    assert report["same_language_first"]["n_queries"] == 0
    assert {lang: row["own_language_top_k_share"] for lang, row in report["per_language"].items()} == \
        {"de": 1.0, "en": 1.0, "ja": 1.0}
    assert empty_body["n_queries"] == 6 and empty_body["k"] == 10


@pytest.fixture(scope="module")
def tiny_client(tmp_path_factory, tiny_artifact):
    tmp = tmp_path_factory.mktemp("audit")
    seed = write_jsonl(tmp / "collection.jsonl", sample_rows())
    with TestClient(create_app(make_settings(tmp, tiny_artifact, seed, audit_max_queries=20,
                                                     calibration="none"))) as client:
        wait_ready(client)
        yield client


def test_self_audit_equals_evaluation_metrics_on_encoder_vectors(tiny_client, tiny_artifact):
    """The service's audit (through Collection.search) == ranks computed offline from the same vectors."""
    report = tiny_client.post("/audit", json={"k": 3}).json()
    encoder = OnnxEncoder(tiny_artifact, "fp32")
    rows = sample_rows()
    passages = encoder.encode([r["text"] for r in rows], "passage")
    distances, aps, languages = [], [], []
    for i, row in enumerate(rows):
        if not row.get("group"):
            continue
        others = [j for j in range(len(rows)) if j != i]  # the query's own document is not a candidate
        relevant = [others.index(j) for j in others if rows[j].get("group") == row["group"]]
        query = encoder.encode([row["text"]], "query")
        (ranks,) = ranks_of_relevant(query, passages[others], [relevant])
        distances.append(rank_distance(ranks))
        aps.append(average_precision(ranks, n_relevant=len(relevant)))
        languages.append(row["language"])
    macro_rd, by_language = macro_by_language(distances, languages)
    macro_ap, _ = macro_by_language(aps, languages)
    assert report["n_queries"] == 12
    assert report["rank_distance"] == pytest.approx(macro_rd)
    assert report["map"] == pytest.approx(macro_ap)
    assert {lang: row["rank_distance"] for lang, row in report["per_language"].items()} == pytest.approx(by_language)
    shares = report["language_share"]
    assert sum(s["top_k_share"] for s in shares.values()) == pytest.approx(1.0)
    assert shares["fr"]["collection_share"] == pytest.approx(1 / 13)


def test_audit_query_language_is_detected_and_max_queries_samples(tiny_client):
    detected = tiny_client.post("/audit", json={"queries": [
        {"text": "Wie viele Menschen leben in Berlin?", "group": "berlin"}]}).json()
    assert list(detected["per_language"]) == ["de"] and detected["same_language_first"]["n_queries"] == 1
    sampled = tiny_client.post("/audit", json={"max_queries": 5}).json()
    again = tiny_client.post("/audit", json={"max_queries": 5}).json()
    assert sampled["n_queries"] == 5 and sampled["n_available_queries"] == 12
    assert sampled["rank_distance"] == again["rank_distance"]  # a fixed sample
    capped = tiny_client.post("/audit", json={"max_queries": 500}).json()
    assert capped["n_queries"] == 12


def test_audit_png_and_html(tiny_client):
    png = tiny_client.post("/audit?format=png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 5000
    page = tiny_client.post("/audit", params={"format": "html"}, json={"k": 5})
    assert page.headers["content-type"].startswith("text/html")
    assert "<table>" in page.text and "data:image/png;base64," in page.text and "rank distance" in page.text


@pytest.mark.parametrize("params, body, fragment", [
    ({}, {"queries": [{"text": "Berlin"}]}, "queries[0]: give relevant_ids or a group"),
    ({}, {"queries": []}, "at least one query"),
    ({}, {"queries": [{"text": "Berlin", "group": "berlin"}] * 21}, "at most 20 audit queries"),
    ({}, {"queries": [{"text": " ", "group": "berlin"}]}, "queries[0].text: must not be empty"),
    ({}, {"queries": [{"text": "Berlin", "group": "berlin", "language": "xx"}]}, "unknown language code 'xx'"),
    ({}, {"k": 0}, "k: Input should be greater than or equal to 1"),
    ({}, {"max_queries": 0}, "max_queries"),
    ({"format": "pdf"}, None, "format: Input should be 'json', 'png' or 'html'"),
])
def test_audit_rejects_bad_input(tiny_client, params, body, fragment):
    response = tiny_client.post("/audit", params=params, json=body)
    assert response.status_code == 422 and fragment in response.json()["detail"], response.json()


@pytest.mark.parametrize("body, fragment", [
    ({"queries": [{"text": "Berlin", "relevant_ids": ["berlin-en", "nope"]}]}, "unknown document ids ['nope']"),
    ({"queries": [{"text": "Berlin", "group": "atlantis"}]}, "no documents in group 'atlantis'"),
])
def test_audit_answers_404_for_documents_or_groups_that_do_not_exist(tiny_client, body, fragment):
    response = tiny_client.post("/audit", json=body)
    assert response.status_code == 404 and fragment in response.json()["detail"], response.json()


def test_self_audit_needs_groups(tmp_path, tiny_artifact):
    seed = write_jsonl(tmp_path / "flat.jsonl", [{"id": "1", "text": "Berlin", "language": "de"},
                                                 {"id": "2", "text": "Paris", "language": "fr"}])
    with TestClient(create_app(make_settings(tmp_path, tiny_artifact, seed))) as client:
        wait_ready(client)
        response = client.post("/audit")
    assert response.status_code == 422 and "self-audit needs documents sharing a `group`" in response.json()["detail"]
