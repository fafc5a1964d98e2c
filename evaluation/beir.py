"""Retrieval evaluation on BEIR/TREC-format data (MIRACL-style). Torch-free.

A data directory holds::

    corpus.jsonl        {"_id", "text", "title"?, "language"?} one document per line (.jsonl.gz also read)
    queries.jsonl       {"_id", "text", "language"?}
    qrels/<split>.tsv   "query-id<TAB>corpus-id<TAB>score" with a header line (BEIR), or the TREC
                        "query-id iteration corpus-id score" layout; grades > 0 are relevant, 0 = judged not

Every document is scored by exact inner product; each query's top ``k`` (ties broken by document order,
as in ``evaluation.metrics``) gives nDCG@10 (graded, linear gains), Recall@k and MRR@10, averaged over
the queries of the split that have at least one relevant document (as BEIR and trec_eval do).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from evaluation import metrics
from evaluation.cache import cached_encode
from evaluation.jsonl import read_jsonl_rows

# Score-matrix budget per chunk of queries (floats), so large corpora don't need a (queries x docs) matrix.
SCORE_BUDGET = 1 << 25
UNKNOWN_LANGUAGE = "unknown"


class DataError(ValueError):
    """Malformed data file; the message starts with ``file:line``."""


@dataclass
class BeirSet:
    doc_ids: list[str]
    passages: list[str]  # title + " " + text when a title exists, else text
    doc_language: list[str | None]
    query_ids: list[str]  # the split's queries with at least one relevant document, in queries.jsonl order
    queries: list[str]
    query_language: list[str | None]
    qrels: list[dict[int, int]]  # per query: {document index: grade}, grades > 0 only
    n_unjudged_queries: int = 0  # queries of the split's qrels without any relevant document (left out)

    def summary(self) -> str:
        return f"{len(self.queries)} queries, {len(self.passages)} documents"


# ------------------------------------------------------------------------------------- reading


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: missing {name}")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        yield from read_jsonl_rows(path)
    except ValueError as error:
        raise DataError(str(error)) from None


def _field(row: dict, name: str, path: Path, number: int, required: bool = True) -> str | None:
    value = row.get(name)
    if value is None:
        if required:
            raise DataError(f"{path}:{number}: missing field {name!r}")
        return None
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{path}:{number}: field {name!r} must be a string, got {type(value).__name__}")


def _read_qrels(path: Path) -> Iterator[tuple[int, str, str, int]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if len(parts) == 4:  # TREC: query iteration document grade
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise DataError(f"{path}:{number}: expected 'query-id corpus-id score', got {line.strip()!r}")
            query, doc, grade = (p.strip() for p in parts)
            try:
                value = int(float(grade))
            except ValueError:
                if number == 1:
                    continue  # the header line
                raise DataError(f"{path}:{number}: score {grade!r} is not a number") from None
            yield number, query, doc, value


def qrels_splits(directory: str | Path) -> list[str]:
    folder = Path(directory) / "qrels"
    return sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []


def load_beir(directory: str | Path, split: str = "dev") -> BeirSet:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"not a directory: {directory}")
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = qrels_splits(directory)
        raise FileNotFoundError(f"{qrels_path} not found; splits available: {', '.join(available) or 'none'}")

    corpus_path = _find(directory, "corpus.jsonl")
    doc_index: dict[str, int] = {}
    passages, doc_language = [], []
    for number, row in _read_jsonl(corpus_path):
        doc_id = _field(row, "_id", corpus_path, number)
        text = _field(row, "text", corpus_path, number)
        title = _field(row, "title", corpus_path, number, required=False)
        if doc_id in doc_index:
            raise DataError(f"{corpus_path}:{number}: duplicate _id {doc_id!r}")
        doc_index[doc_id] = len(passages)
        passages.append(f"{title} {text}" if title else text)
        doc_language.append(_field(row, "language", corpus_path, number, required=False))
    if not passages:
        raise DataError(f"{corpus_path}: no documents")

    queries_path = _find(directory, "queries.jsonl")
    query_rows: dict[str, tuple[str, str | None]] = {}
    for number, row in _read_jsonl(queries_path):
        query_id = _field(row, "_id", queries_path, number)
        if query_id in query_rows:
            raise DataError(f"{queries_path}:{number}: duplicate _id {query_id!r}")
        query_rows[query_id] = (_field(row, "text", queries_path, number),
                                _field(row, "language", queries_path, number, required=False))

    judged: dict[str, dict[int, int]] = defaultdict(dict)
    for number, query_id, doc_id, grade in _read_qrels(qrels_path):
        if query_id not in query_rows:
            raise DataError(f"{qrels_path}:{number}: query {query_id!r} is not in {queries_path.name}")
        if doc_id not in doc_index:
            raise DataError(f"{qrels_path}:{number}: document {doc_id!r} is not in {corpus_path.name}")
        if doc_index[doc_id] in judged[query_id]:
            raise DataError(f"{qrels_path}:{number}: query {query_id!r} judges document {doc_id!r} twice")
        judged[query_id][doc_index[doc_id]] = grade
    if not judged:
        raise DataError(f"{qrels_path}: no judgements")

    data = BeirSet(list(doc_index), passages, doc_language, [], [], [], [])
    for query_id, (text, language) in query_rows.items():  # queries.jsonl order
        if query_id not in judged:
            continue
        relevant = {doc: grade for doc, grade in judged[query_id].items() if grade > 0}
        if not relevant:
            data.n_unjudged_queries += 1
            continue
        data.query_ids.append(query_id)
        data.queries.append(text)
        data.query_language.append(language)
        data.qrels.append(relevant)
    if not data.queries:
        raise DataError(f"{qrels_path}: no query has a relevant document (score > 0)")
    return data


# ------------------------------------------------------------------------------------- scoring


def top_k(query_vectors: np.ndarray, doc_vectors: np.ndarray, k: int) -> Iterator[np.ndarray]:
    """Per query, the indices of its ``k`` best documents by inner product, best first; equal scores
    keep document order (the tie rule of ``evaluation.metrics.ranks_of_relevant``)."""
    n_docs = len(doc_vectors)
    chunk = max(1, min(1024, SCORE_BUDGET // max(n_docs, 1)))
    for start in range(0, len(query_vectors), chunk):
        for row in query_vectors[start : start + chunk] @ doc_vectors.T:
            if k >= n_docs:
                yield np.argsort(-row, kind="stable")
                continue
            kth = row[np.argpartition(-row, k - 1)[k - 1]]
            above = np.flatnonzero(row > kth)
            ids = np.concatenate([above, np.flatnonzero(row == kth)[: k - len(above)]])
            yield ids[np.lexsort((ids, -row[ids]))]


def beir_metrics(query_vectors: np.ndarray, doc_vectors: np.ndarray, data: BeirSet, k: int = 100) -> dict:
    if k < 10:
        raise ValueError(f"k must be >= 10 (nDCG@10 and MRR@10 need the top 10), got {k}")
    if len(query_vectors) != len(data.queries) or len(doc_vectors) != len(data.passages):
        raise ValueError("vectors are not aligned with the data's queries and documents")
    recall_key = f"recall@{k}"
    per_query: dict[str, list[float]] = {"ndcg@10": [], recall_key: [], "mrr@10": []}
    shown_languages = []
    for ranked, relevant in zip(top_k(query_vectors, doc_vectors, k), data.qrels):
        grades = [relevant.get(int(d), 0) for d in ranked]
        ranks = [position + 1 for position, grade in enumerate(grades) if grade > 0]
        per_query["ndcg@10"].append(metrics.ndcg_at_k(grades, relevant.values(), k=10))
        per_query[recall_key].append(metrics.recall_at_k(ranks, k, n_relevant=len(relevant)))
        per_query["mrr@10"].append(metrics.reciprocal_rank(ranks, k=10))
        shown_languages.append([data.doc_language[d] for d in ranked[:10]])

    result: dict = {name: metrics.mean(values) for name, values in per_query.items()}
    per_language: dict = {}
    if any(language is not None for language in data.query_language):
        languages = [language or UNKNOWN_LANGUAGE for language in data.query_language]
        for name, values in per_query.items():
            for language, value in metrics.macro_by_language(values, languages)[1].items():
                per_language.setdefault(language, {})[name] = value
        for language in per_language:
            per_language[language]["n_queries"] = languages.count(language)
    result["per_language"] = per_language
    if any(language is not None for language in data.doc_language):
        collection: dict[str, int] = defaultdict(int)
        for language in data.doc_language:
            collection[language or UNKNOWN_LANGUAGE] += 1
        shown = [[language or UNKNOWN_LANGUAGE for language in row] for row in shown_languages]
        result["language_share@10"] = metrics.language_share(shown, collection)
    result.update(n_queries=len(data.queries), n_docs=len(data.passages), k=k,
                  n_unjudged_queries=data.n_unjudged_queries)
    return result


def evaluate_beir(encoder, data: BeirSet, k: int = 100, cache_dir: str | Path | None = None, progress: bool = False,
                  batch_size: int | None = None) -> dict:
    """Embed ``data`` with ``encoder`` (``.encode(texts, kind)``; through the embedding cache when
    ``cache_dir`` is given) and compute ``beir_metrics``."""
    def embed(texts: list[str], kind: str) -> np.ndarray:
        return cached_encode(encoder, texts, kind, cache_dir, progress, batch_size)

    return beir_metrics(embed(data.queries, "query"), embed(data.passages, "passage"), data, k=k)
