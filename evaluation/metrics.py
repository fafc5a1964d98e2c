"""Ranking metrics, implemented once. Torch-free (numpy only).

Everything here works on *ranks*: the 1-based positions of a query's relevant candidates in its ranking.
The offline evaluator gets ranks from exact score matrices (``ranks_of_relevant``); the service's
``/audit`` gets them from its own search results. Both then call the same functions below, so a number
means the same thing wherever it is reported.

Ties are broken by candidate index (a stable sort on descending score), so ranks are deterministic.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

# Rows of the score matrix per chunk: bounds memory at chunk x candidates floats.
SCORE_CHUNK = 256


def _ranked_before(row: np.ndarray, relevant: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(len(relevant), len(row)) mask: candidate c is ranked before relevant candidate r (higher score, or an
    equal score at a lower index)."""
    own = row[relevant][:, None]
    return (row[None, :] > own) | ((row[None, :] == own) & (positions[None, :] < relevant[:, None]))


def _score_rows(queries: np.ndarray, candidates: np.ndarray, n_relevant: int, chunk: int):
    if len(queries) != n_relevant:
        raise ValueError(f"{len(queries)} queries but {n_relevant} relevance lists")
    for start in range(0, len(queries), chunk):
        yield from zip(range(start, start + chunk), queries[start : start + chunk] @ candidates.T)


def ranks_of_relevant(
    queries: np.ndarray, candidates: np.ndarray, relevant: Sequence[Sequence[int]], chunk: int = SCORE_CHUNK
) -> list[np.ndarray]:
    """For each query, the 1-based ranks of its relevant candidates (in the order given) under inner-product
    scoring over all ``candidates``. ``queries`` (n, d) and ``candidates`` (m, d) are embeddings."""
    positions = np.arange(len(candidates))
    out = []
    for i, row in _score_rows(queries, candidates, len(relevant), chunk):
        rel = np.asarray(relevant[i], dtype=np.int64)
        out.append(1 + _ranked_before(row, rel, positions).sum(axis=1) if rel.size else np.zeros(0, np.int64))
    return out


def ranks_in_pool_and_segment(
    queries: np.ndarray, candidates: np.ndarray, relevant: Sequence[Sequence[int]], segment_starts: Sequence[int],
    chunk: int = SCORE_CHUNK,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Like ``ranks_of_relevant`` where candidates are stored in contiguous segments (one per language):
    per query, each relevant candidate's rank in the whole pool *and* within its own segment, from one
    scoring pass. Segment ``s`` spans ``segment_starts[s]`` to the next start."""
    starts = np.asarray(segment_starts, dtype=np.int64)
    positions = np.arange(len(candidates))
    out = []
    for i, row in _score_rows(queries, candidates, len(relevant), chunk):
        rel = np.asarray(relevant[i], dtype=np.int64)
        if not rel.size:
            out.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        before = _ranked_before(row, rel, positions)
        per_segment = np.add.reduceat(before, starts, axis=1)  # (relevant, segments)
        own_segment = np.searchsorted(starts, rel, side="right") - 1
        out.append((1 + before.sum(axis=1), 1 + per_segment[np.arange(len(rel)), own_segment]))
    return out


def _sorted_ranks(ranks: Iterable[int]) -> np.ndarray:
    array = np.sort(np.asarray(list(ranks) if not isinstance(ranks, np.ndarray) else ranks, dtype=np.float64))
    if array.size and array[0] < 1:
        raise ValueError("ranks are 1-based")
    return array


def average_precision(ranks: Iterable[int], n_relevant: int | None = None, cutoff: int | None = None) -> float:
    """AP of one query from the ranks of its relevant items that were retrieved.

    ``n_relevant`` counts every relevant item, retrieved or not (default: the number of ranks given);
    relevant items missing from the ranking, or ranked past ``cutoff``, contribute precision 0.
    """
    r = _sorted_ranks(ranks)
    total = len(r) if n_relevant is None else n_relevant  # counted before the cutoff drops any
    if cutoff is not None:
        r = r[r <= cutoff]
    if total <= 0:
        return 0.0
    return float(np.sum(np.arange(1, len(r) + 1) / r) / total)


def recall_at_k(ranks: Iterable[int], k: int, n_relevant: int | None = None) -> float:
    """Share of the relevant items ranked in the top ``k``."""
    r = _sorted_ranks(ranks)
    total = len(r) if n_relevant is None else n_relevant
    return float(np.sum(r <= k) / total) if total > 0 else 0.0


def hit_at_k(ranks: Iterable[int], k: int) -> float:
    """1 if any relevant item is in the top ``k`` (LAReQA's R@k with one relevant item per setting)."""
    r = _sorted_ranks(ranks)
    return float(r.size > 0 and r[0] <= k)


def reciprocal_rank(ranks: Iterable[int], k: int | None = None) -> float:
    """1 / rank of the first relevant item (0 if none, or none within ``k``)."""
    r = _sorted_ranks(ranks)
    if r.size == 0 or (k is not None and r[0] > k):
        return 0.0
    return float(1.0 / r[0])


def ndcg_at_k(ranked_gains: Sequence[float], ideal_gains: Iterable[float], k: int = 10) -> float:
    """nDCG@k with linear gains (the trec_eval / BEIR definition).

    ``ranked_gains``: the relevance grade of the items in ranked order (0 for non-relevant);
    ``ideal_gains``: the grades of every relevant item of the query, retrieved or not.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    gains = np.asarray(list(ranked_gains)[:k], dtype=np.float64)
    dcg = float(np.sum(gains * discounts[: len(gains)]))
    ideal = np.sort(np.asarray([g for g in ideal_gains if g > 0], dtype=np.float64))[::-1][:k]
    idcg = float(np.sum(ideal * discounts[: len(ideal)]))
    return dcg / idcg if idcg > 0 else 0.0


def rank_distance(ranks: Iterable[int]) -> float:
    """Language bias of one query (Huang et al. 2023; arXiv 2408.10536 §4.1): max rank - min rank of its
    parallel relevant candidates in the pooled multilingual ranking. 0 = all translations ranked together."""
    r = _sorted_ranks(ranks)
    return float(r[-1] - r[0]) if r.size else 0.0


def macro_by_language(values: Sequence[float], languages: Sequence[Hashable]) -> tuple[float, dict]:
    """Average per language, then over languages: ``(macro mean, {language: mean})``.

    Languages with more queries do not weigh more, as in the published rank-distance figures.
    """
    if len(values) != len(languages):
        raise ValueError(f"{len(values)} values but {len(languages)} languages")
    buckets: dict = defaultdict(list)
    for value, language in zip(values, languages):
        buckets[language].append(value)
    per_language = {language: float(np.mean(v)) for language, v in sorted(buckets.items())}
    macro = float(np.mean(list(per_language.values()))) if per_language else 0.0
    return macro, per_language


def mean(values: Iterable[float]) -> float:
    array = np.asarray(list(values), dtype=np.float64)
    return float(array.mean()) if array.size else 0.0


def language_share(ranked_languages: Sequence[Sequence[Hashable]], collection: Mapping[Hashable, int]) -> dict:
    """Share of each language among the top results of all queries vs its share of the collection.

    ``ranked_languages``: for each query, the languages of its top-k results; ``collection``: documents per
    language. Returns ``{language: {"top_k_share", "collection_share", "ratio"}}``; ratio > 1 = over-represented.
    """
    counts: dict = defaultdict(int)
    for row in ranked_languages:
        for language in row:
            counts[language] += 1
    shown, total = sum(counts.values()), sum(collection.values())
    out = {}
    for language in sorted(set(collection) | set(counts)):
        top = counts[language] / shown if shown else 0.0
        base = collection.get(language, 0) / total if total else 0.0
        out[language] = {"top_k_share": top, "collection_share": base, "ratio": (top / base) if base else None}
    return out
