"""evaluation/beir.py: a hand-made corpus with known answers, the file formats and their errors, and a
cross-check against pytrec_eval."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation import metrics
from evaluation.beir import DataError, beir_metrics, evaluate_beir, load_beir, top_k

N_DOCS = 12
TITLES = {1: "Title one", 4: "Title four"}


class FakeEncoder:
    """Maps known texts to chosen vectors; fails on any text or kind it was not given."""

    fingerprint = "fake-encoder"

    def __init__(self, vectors: dict[tuple[str, str], np.ndarray]):
        self.vectors = vectors
        self.calls: list[tuple[str, int]] = []

    def encode(self, texts, kind, **kwargs):
        self.calls.append((kind, len(texts)))
        return np.stack([self.vectors[(kind, text)] for text in texts]).astype(np.float32)


def _passage(d: int) -> str:
    return f"{TITLES[d]} document {d}" if d in TITLES else f"document {d}"


def write_beir_dir(directory: Path) -> Path:
    """12 documents (en even, de odd; two with titles) and 5 queries, of which q4 has only a 0-grade judgement
    and q5 is not judged at all."""
    (directory / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{d}", "text": f"document {d}", "language": "en" if d % 2 == 0 else "de",
               **({"title": TITLES[d]} if d in TITLES else {})} for d in range(N_DOCS)]
    corpus[2]["title"] = ""  # an empty title is no title
    (directory / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    queries = [{"_id": "q1", "text": "query one", "language": "en"},
               {"_id": "q2", "text": "query two", "language": "de"},
               {"_id": "q3", "text": "query three", "language": "de"},
               {"_id": "q4", "text": "query four", "language": "en"},
               {"_id": "q5", "text": "query five", "language": "en"}]
    (directory / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n\n", encoding="utf-8")
    qrels = ["query-id\tcorpus-id\tscore",
             "q1\td1\t1", "q1\td3\t1", "q1\td11\t1",
             "q2\td11\t2", "q2\td0\t1", "q2\td5\t0",
             "q3\td1\t1",
             "q4\td2\t0"]
    (directory / "qrels" / "dev.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return directory


def fake_encoder() -> FakeEncoder:
    """Documents are one-hot, so a query vector *is* its row of scores."""
    vectors = {("passage", _passage(d)): np.eye(N_DOCS)[d] for d in range(N_DOCS)}
    i = np.arange(N_DOCS)
    vectors[("query", "query one")] = 1 - 0.05 * i  # ranking d0, d1, ..., d11
    vectors[("query", "query two")] = 0.05 * i  # ranking d11, d10, ..., d0
    vectors[("query", "query three")] = np.where(i < 2, 0.5, 0.0)  # d0 and d1 tie: d0 first
    vectors[("query", "query four")] = np.ones(N_DOCS)
    return FakeEncoder(vectors)


def test_hand_made_corpus_exact_metrics(tmp_path):
    data = load_beir(write_beir_dir(tmp_path / "beir"), split="dev")
    assert data.query_ids == ["q1", "q2", "q3"] and data.n_unjudged_queries == 1
    assert data.passages[1] == "Title one document 1" and data.passages[2] == "document 2"
    assert data.qrels[1] == {11: 2, 0: 1}  # the 0-grade judgement of d5 is not relevant

    encoder = fake_encoder()
    result = evaluate_beir(encoder, data, k=10)
    assert sorted(encoder.calls) == [("passage", 12), ("query", 3)]
    log2 = math.log2
    # q1: relevant d1, d3, d11 at ranks 2, 4, 12 -> DCG@10 = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3) + 1/log2(4)
    ndcg1 = (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3) + 0.5)
    # q2: d11 (grade 2) at rank 1, d0 (grade 1) at rank 12 -> DCG@10 = 2; IDCG = 2 + 1/log2(3)
    ndcg2 = 2 / (2 + 1 / log2(3))
    # q3: d1 ties d0 and comes second -> DCG = 1/log2(3); IDCG = 1
    ndcg3 = 1 / log2(3)
    assert result["ndcg@10"] == pytest.approx((ndcg1 + ndcg2 + ndcg3) / 3)
    # recall@10: q1 2 of 3, q2 1 of 2, q3 1 of 1
    assert result["recall@10"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # MRR@10: 1/2, 1/1, 1/2
    assert result["mrr@10"] == pytest.approx(2 / 3)
    assert result["per_language"]["en"] == pytest.approx({"ndcg@10": ndcg1, "recall@10": 2 / 3, "mrr@10": 0.5, "n_queries": 1})
    assert result["per_language"]["de"] == pytest.approx(
        {"ndcg@10": (ndcg2 + ndcg3) / 2, "recall@10": 0.75, "mrr@10": 0.75, "n_queries": 2})
    assert (result["n_queries"], result["n_docs"], result["n_unjudged_queries"]) == (3, 12, 1)
    # top 10 of q1 d0..d9, q2 d11..d2, q3 d0..d9: 15 en and 15 de of 30 shown; the collection is half/half
    share = result["language_share@10"]
    assert share["en"]["top_k_share"] == pytest.approx(0.5) and share["en"]["ratio"] == pytest.approx(1.0)

    # deeper than the corpus: every relevant document is found
    deep = evaluate_beir(fake_encoder(), data, k=100)
    assert deep["recall@100"] == pytest.approx(1.0) and deep["ndcg@10"] == pytest.approx(result["ndcg@10"])


def test_top_k_agrees_with_ranks_of_relevant_under_ties():
    rng = np.random.default_rng(0)
    queries = rng.integers(-1, 2, size=(20, 3)).astype(np.float64)
    docs = rng.integers(-1, 2, size=(60, 3)).astype(np.float64)  # many exact ties
    for k in (10, 25, 60, 80):
        for q, ranked in enumerate(top_k(queries, docs, k)):
            assert len(ranked) == min(k, 60)
            ranks = metrics.ranks_of_relevant(queries[q : q + 1], docs, [ranked.tolist()])[0]
            assert ranks.tolist() == list(range(1, len(ranked) + 1))


def test_beir_metrics_match_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from evaluation.beir import BeirSet

    rng = np.random.default_rng(7)
    n_docs, n_queries = 200, 30
    docs, queries = rng.normal(size=(n_docs, 16)), rng.normal(size=(n_queries, 16))
    qrels = [{int(d): int(rng.integers(1, 4)) for d in rng.choice(n_docs, size=rng.integers(1, 12), replace=False)}
             for _ in range(n_queries)]
    data = BeirSet([f"d{i}" for i in range(n_docs)], [""] * n_docs, [None] * n_docs, [f"q{i}" for i in range(n_queries)],
                   [""] * n_queries, [None] * n_queries, qrels)
    ours = beir_metrics(queries, docs, data, k=100)
    scores = queries @ docs.T
    run = {f"q{q}": {f"d{d}": float(scores[q, d]) for d in np.argsort(-scores[q])[:100]} for q in range(n_queries)}
    top10 = {q: dict(sorted(r.items(), key=lambda kv: -kv[1])[:10]) for q, r in run.items()}
    trec_qrels = {f"q{q}": {f"d{d}": g for d, g in rel.items()} for q, rel in enumerate(qrels)}
    full = pytrec_eval.RelevanceEvaluator(trec_qrels, {"ndcg_cut_10", "recall_100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(trec_qrels, {"recip_rank"}).evaluate(top10)
    assert ours["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in full.values()]))
    assert ours["recall@100"] == pytest.approx(np.mean([v["recall_100"] for v in full.values()]))
    assert ours["mrr@10"] == pytest.approx(np.mean([v["recip_rank"] for v in rr.values()]))
    assert ours["per_language"] == {} and "language_share@10" not in ours


def test_trec_qrels_and_gzipped_corpus(tmp_path):
    directory = write_beir_dir(tmp_path / "beir")
    corpus = directory / "corpus.jsonl"
    with gzip.open(directory / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(corpus.read_text(encoding="utf-8"))
    corpus.unlink()
    (directory / "qrels" / "test.tsv").write_text("q1 Q0 d3 1\nq2 0 d4 2\n", encoding="utf-8")
    data = load_beir(directory, split="test")
    assert data.query_ids == ["q1", "q2"] and data.qrels == [{3: 1}, {4: 2}]
    assert len(data.passages) == N_DOCS


@pytest.mark.parametrize(
    "target, content, message",
    [
        ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": \n', r"corpus.jsonl:2: not valid JSON"),
        ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n\n{"_id": "d1"}\n', r"corpus.jsonl:3: missing field 'text'"),
        ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{"_id": "d0", "text": "b"}\n', r"corpus.jsonl:2: duplicate _id 'd0'"),
        ("corpus.jsonl", '["d0", "a"]\n', r"corpus.jsonl:1: expected a JSON object"),
        ("queries.jsonl", '{"_id": "q1", "text": ["x"]}\n', r"queries.jsonl:1: field 'text' must be a string"),
        ("qrels/dev.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td99\t1\n", r"dev.tsv:3: document 'd99' is not in"),
        ("qrels/dev.tsv", "query-id\tcorpus-id\tscore\nq9\td1\t1\n", r"dev.tsv:2: query 'q9' is not in"),
        ("qrels/dev.tsv", "q1\td1\t1\nq1\td2\thigh\n", r"dev.tsv:2: score 'high' is not a number"),
        ("qrels/dev.tsv", "q1\td1\n", r"dev.tsv:1: expected 'query-id corpus-id score'"),
        ("qrels/dev.tsv", "q1\td1\t1\nq1\td1\t2\n", r"dev.tsv:2: query 'q1' judges document 'd1' twice"),
        ("qrels/dev.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t0\n", r"no query has a relevant document"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, target, content, message):
    directory = write_beir_dir(tmp_path / "beir")
    (directory / target).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_beir(directory, split="dev")


def test_missing_files_and_splits(tmp_path):
    directory = write_beir_dir(tmp_path / "beir")
    with pytest.raises(FileNotFoundError, match="splits available: dev"):
        load_beir(directory, split="test")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_beir(tmp_path / "nowhere")
    (directory / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="missing queries.jsonl"):
        load_beir(directory)


def test_k_below_ten_is_rejected(tmp_path):
    data = load_beir(write_beir_dir(tmp_path / "beir"))
    with pytest.raises(ValueError, match="k must be >= 10"):
        evaluate_beir(fake_encoder(), data, k=5)
