"""Calibrated search over raw FAISS shards: no re-encoding, no second index (see ``encoder.calibration``).

For a shard of language L, the calibrated score of passage d for a query is::

    s(d) = (q' . d - q' . m_L) / |P (d - m_L)|         (divided by |q'| to report a cosine)

The numerator is the shard's own inner product with the shifted query ``q'`` minus one offset per shard,
so FAISS ranks by it; the denominator, one norm per passage, is what reorders. Exact top-k:

1. fetch the top ``n`` passages by ``q' . d`` (``n`` a few times k), reconstruct their stored vectors and
   rescore them exactly;
2. every passage not fetched has ``q' . d <= r*`` (the n-th raw score), so its calibrated score is at most
   ``(r* - c) / lo`` (or ``/ hi`` when negative), ``lo``/``hi`` the extreme norms over the shard;
3. if the k-th rescored score beats that bound the answer is exact; otherwise fetch 4n and repeat (at
   worst the whole shard).

The norm range of a shard is computed once per (shard version, calibrator) in one pass over its vectors
and cached; for flat shards this is exact retrieval, for hnsw / ivf exact rescoring of what they return.
"""
from __future__ import annotations

import threading

import numpy as np

from encoder.calibration import Calibrator
from indexes.shards import Shard

WIDEN_MIN = 16  # fetch at least k + this many candidates per shard before checking the bound
WIDEN_FACTOR = 4
NORM_SLACK = 1e-6  # float32 rounding in the bound: never claim exactness on a margin this thin


class NormRanges:
    """(lowest, highest) ``|P (d - m_L)|`` per shard, cached per shard version and calibrator."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, int, int, float, float]] = {}
        self._lock = threading.Lock()

    def get(self, language: str, shard: Shard, calibrator: Calibrator) -> tuple[float, float]:
        key = (id(shard), shard.version, calibrator.key)
        cached = self._cache.get(language)
        if cached is not None and cached[:3] == key:
            return cached[3], cached[4]
        norms = passage_norms(shard.stored_vectors(), calibrator, language)
        low, high = (float(norms.min()), float(norms.max())) if len(norms) else (1.0, 1.0)
        with self._lock:
            self._cache[language] = (*key, low, high)
        return low, high


def passage_norms(vectors: np.ndarray, calibrator: Calibrator, language: str) -> np.ndarray:
    """|P (d - m_L)| for rows d, in float64."""
    shifted = np.asarray(vectors, dtype=np.float64) - calibrator.offset(language)
    return np.linalg.norm(calibrator.project(shifted), axis=1)


def shifted_query(vector: np.ndarray, calibrator: Calibrator, query_language: str | None) -> np.ndarray:
    """q' = P (q - m_l), float64."""
    return calibrator.project((np.asarray(vector, dtype=np.float64) - calibrator.offset(query_language))[None, :])[0]


def search_shard(shard: Shard, language: str, query: np.ndarray, depth: int, calibrator: Calibrator,
                 ranges: NormRanges) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best (calibrated cosine, key) of one shard for the shifted query ``query`` (q'), best first."""
    live = len(shard)
    if live == 0 or depth <= 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    length = float(np.linalg.norm(query)) or 1.0
    offset = float(query @ calibrator.offset(language))
    faiss_query = np.ascontiguousarray(query[None, :], dtype=np.float32)
    fetch = min(live, max(WIDEN_FACTOR * depth, depth + WIDEN_MIN))
    while True:
        raw, keys = shard.search(faiss_query, fetch)
        vectors = shard.vectors(keys).astype(np.float64)
        scores = (vectors @ query - offset) / np.maximum(passage_norms(vectors, calibrator, language), 1e-12)
        order = np.lexsort((keys, -scores))[:depth]
        if fetch >= live or len(keys) < fetch:  # everything the shard can return was rescored
            break
        low, high = ranges.get(language, shard, calibrator)
        margin = float(raw[-1]) - offset
        bound = margin / max(low, 1e-12) if margin > 0 else margin / max(high, 1e-12)
        if len(order) == depth and scores[order[-1]] >= bound + NORM_SLACK:
            break
        fetch = min(live, fetch * WIDEN_FACTOR)
    return scores[order] / length, keys[order]
