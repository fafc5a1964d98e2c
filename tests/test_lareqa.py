"""evaluation/lareqa.py: a hand-computed case (fake encoder, chosen scores) and the loader on XQuAD-R-format data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.lareqa import LareqaSet, evaluate_lareqa, lareqa_metrics, load_lareqa
from tests.trainer_fixtures import write_squad_dir

# Two questions (a, b), each asked in en and de; candidates E0 E1 (en) then D0 D1 (de).
# Candidates are one-hot, so each query vector is its row of scores over [E0, E1, D0, D1].
HAND_SET = LareqaSet(
    languages=["de", "en"],
    candidates=["E0", "E1", "D0", "D1"],
    candidate_language=["en", "en", "de", "de"],
    queries=["q1 en a", "q2 de a", "q3 en b", "q4 de b"],
    query_language=["en", "de", "en", "de"],
    query_id=["a", "a", "b", "b"],
    relevant=[{"en": 0, "de": 2}, {"en": 0, "de": 2}, {"en": 1, "de": 3}, {"en": 1, "de": 3}],
)
SCORES = {
    # pool ranking E0 D1 D0 E1: answers E0 -> pool 1 (en segment 1), D0 -> pool 3 (de segment 2)
    "q1 en a": [0.9, 0.1, 0.5, 0.7],
    # pool ranking E1 D1 D0 E0: E0 -> pool 4 (en 2), D0 -> pool 3 (de 2)
    "q2 de a": [0.2, 0.8, 0.4, 0.6],
    # pool ranking E1 E0 D0 D1: E1 -> pool 1 (en 1), D1 -> pool 4 (de 2)
    "q3 en b": [0.3, 0.4, 0.2, 0.1],
    # pool ranking D1 D0 E1 E0: E1 -> pool 3 (en 1), D1 -> pool 1 (de 1)
    "q4 de b": [0.1, 0.2, 0.3, 0.4],
}


class FakeEncoder:
    fingerprint = "fake"

    def __init__(self):
        self.kinds = []

    def encode(self, texts, kind, **kwargs):
        self.kinds.append(kind)
        table = SCORES if kind == "query" else {c: np.eye(4)[i] for i, c in enumerate(HAND_SET.candidates)}
        return np.array([table[text] for text in texts], dtype=np.float32)


def test_hand_computed_lareqa_figures():
    encoder = FakeEncoder()
    r = evaluate_lareqa(encoder, HAND_SET)
    assert sorted(encoder.kinds) == ["passage", "query"]
    # single-answer AP = 1 / rank within the answer's language:
    #   en->en: q1 1, q3 1 -> 1;    de->de: q2 1/2, q4 1 -> 3/4;   mono = (1 + 3/4) / 2 = 7/8
    #   en->de: q1 1/2, q3 1/2 -> 1/2;  de->en: q2 1/2, q4 1 -> 3/4;  cross = (1/2 + 3/4) / 2 = 5/8
    assert r["mono_map"] == pytest.approx(7 / 8)
    assert r["cross_map"] == pytest.approx(5 / 8)
    assert r["cross_matrix"]["en"] == pytest.approx({"en": 1.0, "de": 0.5})
    assert r["cross_matrix"]["de"] == pytest.approx({"en": 0.75, "de": 0.75})
    # multilingual AP over pool ranks: q1 [1, 3] -> (1 + 2/3)/2 = 5/6; q3 [1, 4] -> (1 + 2/4)/2 = 3/4;
    #   q2 [3, 4] -> (1/3 + 2/4)/2 = 5/12; q4 [1, 3] -> 5/6.  en: (5/6 + 3/4)/2 = 19/24; de: (5/12 + 5/6)/2 = 5/8
    #   macro over languages: (19/24 + 15/24) / 2 = 17/24
    assert r["multilingual_map"] == pytest.approx(17 / 24)
    # rank distance = max - min pool rank: q1 2, q3 3 -> en 2.5; q2 1, q4 2 -> de 1.5; macro 2
    assert r["rank_distance"] == pytest.approx(2.0)
    # R@1 mono: en->en 2/2 hits, de->de 1/2 -> 3/4; cross: en->de 0/2, de->en 1/2 -> 1/4
    assert r["mono_r@1"] == pytest.approx(0.75) and r["cross_r@1"] == pytest.approx(0.25)
    # multilingual R@1 = share of a query's answers in the top 1: q1 1/2, q3 1/2 -> en 1/2; q2 0, q4 1/2 -> de 1/4
    assert r["multilingual_r@1"] == pytest.approx(3 / 8)
    assert r["mono_r@10"] == r["cross_r@10"] == r["multilingual_r@10"] == 1.0
    assert r["per_language"]["en"] == pytest.approx(
        {"mono_map": 1.0, "cross_map_as_query": 0.5, "multilingual_map": 19 / 24, "rank_distance": 2.5})
    assert r["per_language"]["de"] == pytest.approx(
        {"mono_map": 0.75, "cross_map_as_query": 0.75, "multilingual_map": 5 / 8, "rank_distance": 1.5})
    assert (r["n_queries"], r["n_candidates"], r["languages"]) == (4, 4, ["de", "en"])


def test_metrics_from_vectors_do_not_depend_on_scale():
    queries = np.array([SCORES[q] for q in HAND_SET.queries]) * 3.0
    assert lareqa_metrics(queries, np.eye(4), HAND_SET)["multilingual_map"] == pytest.approx(17 / 24)


def test_load_lareqa_on_xquad_format(tmp_path):
    directory = tmp_path / "xq"
    ids = write_squad_dir(directory, languages=("en", "de"), articles=4, paragraphs=2, sentences=3)
    data = load_lareqa(directory)
    files = {language: json.loads((directory / f"{language}.json").read_text()) for language in ("en", "de")}
    # 4 articles x 2 paragraphs x 3 sentences per language, grouped by language in sorted order
    assert data.languages == ["de", "en"]
    assert data.candidate_language == ["de"] * 24 + ["en"] * 24
    assert len(data.queries) == 2 * 4 * 2 * 4  # 4 questions per paragraph, in both languages
    for query, language, qid, relevant in zip(data.queries, data.query_language, data.query_id, data.relevant):
        assert set(relevant) == {"de", "en"} and query.startswith(language)
        a, p, q = (int(x) for x in qid[1:].replace("p", " ").replace("q", " ").split())
        sentence = q if q < 3 else 0  # write_squad_dir: question q answers sentence q, the extra one sentence 0
        for lang, index in relevant.items():
            assert data.candidate_language[index] == lang
            assert data.candidates[index] == files[lang]["data"][a]["paragraphs"][p]["sentences"][sentence]

    test = load_lareqa(directory, split="test")
    test_ids = {q for a in (1, 3) for q in ids[a]}
    assert set(test.query_id) == test_ids and len(test.candidates) == 2 * 2 * 2 * 3
    only_en = load_lareqa(directory, languages=["en"])
    assert only_en.languages == ["en"] and set(only_en.candidate_language) == {"en"}
    with pytest.raises(ValueError, match="split must be one of"):
        load_lareqa(directory, split="dev")
    with pytest.raises(ValueError, match="no data for language"):
        load_lareqa(directory, languages=["xx"])
