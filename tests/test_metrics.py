"""evaluation/metrics.py: hand-computed cases, a brute-force ranking, and two independent implementations
(ranx, pytrec_eval) on random runs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from evaluation import metrics

# ------------------------------------------------------------------------------ ranks_of_relevant


def test_ranks_of_relevant_hand_case_and_tie_breaking():
    # scores = candidates @ [1, 0] = [1.0, 0.5, 1.0, 0.25] (exact in binary floating point)
    queries = np.array([[1.0, 0.0]])
    candidates = np.array([[1.0, 0.0], [0.5, 0.0], [1.0, 0.0], [0.25, 0.0]])
    # candidate 2 ties candidate 0 at 1.0; the lower index wins, so 0 is rank 1 and 2 is rank 2;
    # candidate 1 (0.5) is behind both -> rank 3; candidate 3 (0.25) -> rank 4. Order of the input is kept.
    (ranks,) = metrics.ranks_of_relevant(queries, candidates, [[2, 1, 3, 0]])
    assert ranks.tolist() == [2, 3, 4, 1]


def test_ranks_of_relevant_empty_and_mismatch():
    queries, candidates = np.eye(2), np.eye(2)
    ranks = metrics.ranks_of_relevant(queries, candidates, [[], [1]])
    assert ranks[0].size == 0 and ranks[1].tolist() == [1]
    with pytest.raises(ValueError, match="2 queries but 1"):
        metrics.ranks_of_relevant(queries, candidates, [[0]])


def _brute_force_ranks(queries, candidates, relevant):
    scores = queries @ candidates.T
    out = []
    for row, rel in zip(scores, relevant):
        order = np.argsort(-row, kind="stable")  # stable: equal scores keep the lower index first
        position = np.empty_like(order)
        position[order] = np.arange(1, len(order) + 1)
        out.append(position[np.asarray(rel, dtype=np.int64)])
    return out


@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_ranks_of_relevant_matches_brute_force_argsort(chunk):
    rng = np.random.default_rng(0)
    # small integer vectors: exact dot products, many ties
    queries = rng.integers(-2, 3, size=(40, 4)).astype(np.float64)
    candidates = rng.integers(-2, 3, size=(120, 4)).astype(np.float64)
    relevant = [rng.choice(120, size=rng.integers(0, 6), replace=False).tolist() for _ in range(40)]
    got = metrics.ranks_of_relevant(queries, candidates, relevant, chunk=chunk)
    for mine, expected in zip(got, _brute_force_ranks(queries, candidates, relevant)):
        assert mine.tolist() == expected.tolist()


def test_ranks_in_pool_and_segment_matches_per_segment_brute_force():
    rng = np.random.default_rng(1)
    queries = rng.integers(-2, 3, size=(30, 3)).astype(np.float64)
    candidates = rng.integers(-2, 3, size=(50, 3)).astype(np.float64)
    starts = [0, 10, 35]  # segments [0, 10), [10, 35), [35, 50)
    bounds = starts + [50]
    relevant = [rng.choice(50, size=rng.integers(0, 5), replace=False).tolist() for _ in range(30)]
    got = metrics.ranks_in_pool_and_segment(queries, candidates, relevant, starts, chunk=4)
    pool_expected = _brute_force_ranks(queries, candidates, relevant)
    for q, ((pool, within), rel) in enumerate(zip(got, relevant)):
        assert pool.tolist() == pool_expected[q].tolist()
        for r, rank in zip(rel, within):
            s = int(np.searchsorted(starts, r, side="right") - 1)
            lo, hi = bounds[s], bounds[s + 1]
            (expected,) = _brute_force_ranks(queries[q : q + 1], candidates[lo:hi], [[r - lo]])
            assert rank == expected[0]


# ------------------------------------------------------------------------------ per-query metrics


def test_average_precision_hand_cases():
    # relevant at ranks 1 and 3: precisions 1/1 and 2/3 -> (1 + 2/3) / 2 = 5/6
    assert metrics.average_precision([3, 1]) == pytest.approx(5 / 6)
    # the same two hits out of 4 relevant items: (1 + 2/3) / 4 = 5/12
    assert metrics.average_precision([1, 3], n_relevant=4) == pytest.approx(5 / 12)
    # cutoff 2 drops the hit at rank 3 but not the relevant item: 1/1 / 2 = 0.5
    assert metrics.average_precision([1, 3], cutoff=2) == pytest.approx(0.5)
    # one relevant item at rank 4: 1/4
    assert metrics.average_precision([4]) == pytest.approx(0.25)
    assert metrics.average_precision([]) == 0.0
    assert metrics.average_precision([], n_relevant=3) == 0.0
    with pytest.raises(ValueError, match="1-based"):
        metrics.average_precision([0, 2])


def test_recall_hit_reciprocal_rank_hand_cases():
    # ranks 1, 5, 20: two of three within 10 -> 2/3; with 4 relevant items -> 2/4
    assert metrics.recall_at_k([20, 1, 5], 10) == pytest.approx(2 / 3)
    assert metrics.recall_at_k([20, 1, 5], 10, n_relevant=4) == pytest.approx(0.5)
    assert metrics.recall_at_k([], 10) == 0.0
    assert metrics.hit_at_k([3], 1) == 0.0
    assert metrics.hit_at_k([3], 3) == 1.0
    assert metrics.hit_at_k([9, 2], 2) == 1.0
    assert metrics.hit_at_k([], 10) == 0.0
    # first relevant item at rank 2 -> 1/2; not within k = 1 -> 0
    assert metrics.reciprocal_rank([4, 2]) == pytest.approx(0.5)
    assert metrics.reciprocal_rank([4, 2], k=1) == 0.0
    assert metrics.reciprocal_rank([4, 2], k=2) == pytest.approx(0.5)
    assert metrics.reciprocal_rank([]) == 0.0


def test_ndcg_hand_cases():
    # ranked grades [0, 2, 1]: DCG = 0/log2(2) + 2/log2(3) + 1/log2(4) = 2/log2(3) + 0.5
    # ideal grades sorted [2, 1]: IDCG = 2/log2(2) + 1/log2(3) = 2 + 1/log2(3)
    expected = (2 / math.log2(3) + 0.5) / (2 + 1 / math.log2(3))
    assert metrics.ndcg_at_k([0, 2, 1], [1, 2], k=10) == pytest.approx(expected)
    assert expected == pytest.approx(0.66967, abs=1e-5)
    # zero grades in the ideal list are ignored; perfect ranking -> 1
    assert metrics.ndcg_at_k([2, 1, 0], [0, 1, 2, 0], k=10) == pytest.approx(1.0)
    # k = 1 sees only the first item: 0 / 2 -> 0; then 2 / 2 -> 1
    assert metrics.ndcg_at_k([0, 2], [2], k=1) == 0.0
    assert metrics.ndcg_at_k([2, 0], [2, 1], k=1) == pytest.approx(1.0)
    # a relevant item never retrieved lowers the score: DCG = 1, IDCG = 1 + 1/log2(3)
    assert metrics.ndcg_at_k([1], [1, 1], k=10) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert metrics.ndcg_at_k([0, 0], [], k=10) == 0.0


def test_rank_distance_hand_cases():
    # parallel answers ranked 5, 2, 9: max - min = 9 - 2 = 7
    assert metrics.rank_distance([5, 2, 9]) == 7.0
    assert metrics.rank_distance([3]) == 0.0
    assert metrics.rank_distance([]) == 0.0


# ------------------------------------------------------------------------------- aggregations


def test_macro_by_language_is_mean_of_language_means():
    # en: (1 + 2 + 3) / 3 = 2; de: 10 -> macro (2 + 10) / 2 = 6 (the micro mean would be 16 / 4 = 4)
    macro, per_language = metrics.macro_by_language([1, 2, 3, 10], ["en", "en", "en", "de"])
    assert macro == pytest.approx(6.0)
    assert per_language == {"de": 10.0, "en": 2.0}
    assert list(per_language) == ["de", "en"]  # sorted
    assert metrics.macro_by_language([], []) == (0.0, {})
    with pytest.raises(ValueError, match="2 values but 1 languages"):
        metrics.macro_by_language([1, 2], ["en"])


def test_mean():
    assert metrics.mean([1, 2]) == 1.5
    assert metrics.mean(x for x in [4.0]) == 4.0
    assert metrics.mean([]) == 0.0


def test_language_share_hand_case():
    # top results: en, de, en, en -> en 3/4, de 1/4. Collection: en 1, de 3, fr 4 -> 1/8, 3/8, 4/8.
    share = metrics.language_share([["en", "de"], ["en", "en"]], {"en": 1, "de": 3, "fr": 4})
    assert share["en"] == {"top_k_share": 0.75, "collection_share": 0.125, "ratio": pytest.approx(6.0)}
    assert share["de"] == {"top_k_share": 0.25, "collection_share": 0.375, "ratio": pytest.approx(2 / 3)}
    assert share["fr"] == {"top_k_share": 0.0, "collection_share": 0.5, "ratio": 0.0}
    # a language shown but absent from the collection counts has no ratio
    assert metrics.language_share([["xx"]], {"en": 2})["xx"] == {"top_k_share": 1.0, "collection_share": 0.0, "ratio": None}
    assert metrics.language_share([], {}) == {}


# --------------------------------------------------------- cross-check with ranx and pytrec_eval


def _random_runs(seed: int, n_queries: int = 25, n_docs: int = 300, depth: int = 220):
    """Graded qrels (0 = judged non-relevant) and runs without score ties that miss some relevant docs."""
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(n_queries):
        judged = rng.choice(n_docs, size=rng.integers(2, 15), replace=False)
        qrels[f"q{q}"] = {f"d{d}": int(rng.integers(0, 4)) for d in judged}
        if not any(qrels[f"q{q}"].values()):
            qrels[f"q{q}"][f"d{judged[0]}"] = 1
        retrieved = rng.choice(n_docs, size=depth, replace=False)
        scores = rng.permutation(depth) / depth + 0.001  # all distinct
        run[f"q{q}"] = {f"d{d}": float(s) for d, s in zip(retrieved, scores)}
    return qrels, run


def _ours(qrels: dict, run: dict) -> dict[str, float]:
    ap, ndcg, recall, mrr = [], [], [], []
    for q, judged in qrels.items():
        ranked = sorted(run[q], key=run[q].get, reverse=True)
        grades = [judged.get(d, 0) for d in ranked]
        ranks = [i + 1 for i, g in enumerate(grades) if g > 0]
        n_relevant = sum(g > 0 for g in judged.values())
        ap.append(metrics.average_precision(ranks, n_relevant))
        ndcg.append(metrics.ndcg_at_k(grades, judged.values(), k=10))
        recall.append(metrics.recall_at_k(ranks, 100, n_relevant))
        mrr.append(metrics.reciprocal_rank(ranks, k=10))
    return {"map": metrics.mean(ap), "ndcg@10": metrics.mean(ndcg), "recall@100": metrics.mean(recall),
            "mrr@10": metrics.mean(mrr)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_pytrec_eval(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = _random_runs(seed)
    full = pytrec_eval.RelevanceEvaluator(qrels, {"map", "ndcg_cut_10", "recall_100"}).evaluate(run)
    # trec_eval's recip_rank has no cutoff: evaluate it on the runs cut to their top 10
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    theirs = {
        "map": np.mean([v["map"] for v in full.values()]),
        "ndcg@10": np.mean([v["ndcg_cut_10"] for v in full.values()]),
        "recall@100": np.mean([v["recall_100"] for v in full.values()]),
        "mrr@10": np.mean([v["recip_rank"] for v in rr.values()]),
    }
    ours = _ours(qrels, run)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("seed", [3, 4])
def test_metrics_match_ranx(seed):
    ranx = pytest.importorskip("ranx")
    qrels, run = _random_runs(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety chatter
        theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), ["map", "ndcg@10", "recall@100", "mrr@10"])
    ours = _ours(qrels, run)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(float(value), abs=1e-9), name
