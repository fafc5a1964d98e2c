"""Calibrated search over raw FAISS shards: no re-encoding, no second index (see ``encoder.calibration``).

For a shard of language L, the calibrated score of passage d for a query is::

    s(d) = (q' . d - q' . m_L) / |P (d - m_L)|         (divided by |q'| to report a cosine)

The numerator is the shard's own inner product with the shifted query ``q'`` minus one offset per shard;
the denominator, one number per passage, is what reorders. It depends on the calibrator, not on the query,
so each shard keeps ``1 / |P (d - m_L)|`` for all its passages, computed in one pass per (shard version,
calibrator) and cached:

- ``flat`` shards are scored exactly: one matrix-vector product over FAISS's own storage (no copy), the
  offset, the cached norms, a partial sort. The same work as FAISS's exhaustive search, plus O(n).
- ``hnsw`` / ``ivf`` shards return their top ``n = max(4k, k + 16)`` by ``q' . d``, which are rescored
  exactly (their stored vectors reconstructed from the index): an exact rescoring of what the approximate
  index finds, as approximate as the raw search.
"""
from __future__ import annotations

import threading

import faiss
import numpy as np

from encoder.calibration import Calibrator
from indexes.shards import Shard

WIDEN_FACTOR = 4  # approximate shards: candidates rescored per result asked
WIDEN_MIN = 16


def passage_norms(vectors: np.ndarray, calibrator: Calibrator, language: str) -> np.ndarray:
    """|P (d - m_L)| for rows d, in float64."""
    shifted = np.asarray(vectors, dtype=np.float64) - calibrator.offset(language)
    return np.linalg.norm(calibrator.project(shifted), axis=1)


def inner_products(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors @ query`` in FAISS's single-threaded SIMD kernel: the one an exhaustive FAISS search of one
    query runs. (numpy's BLAS would wake its own thread pool, which on loaded cores costs tens of ms.)"""
    vectors, query = np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(query, dtype=np.float32)
    out = np.empty(len(vectors), dtype=np.float32)
    faiss.fvec_inner_products_ny(faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(vectors),
                                 vectors.shape[1], len(vectors))
    return out


def shifted_query(vector: np.ndarray, calibrator: Calibrator, query_language: str | None) -> np.ndarray:
    """q' = P (q - m_l), float64."""
    return calibrator.project((np.asarray(vector, dtype=np.float64) - calibrator.offset(query_language))[None, :])[0]


class ShardNorms:
    """Per flat shard: its keys in storage order and ``1 / |P (d - m_L)|``, per shard version and calibrator.

    One entry per (shard language, method): queries that fall back to another method (an undetected
    language) do not evict the default method's norms."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple] = {}
        self._lock = threading.Lock()

    def get(self, language: str, shard: Shard, calibrator: Calibrator) -> tuple[np.ndarray, np.ndarray]:
        key = (id(shard), shard.version, calibrator.key)
        cached = self._cache.get((language, calibrator.method))
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        vectors = shard.stored_vectors()
        keys = shard.storage_keys()
        inverse = (1.0 / np.maximum(passage_norms(vectors, calibrator, language), 1e-12)).astype(np.float32)
        with self._lock:
            self._cache[(language, calibrator.method)] = (key, keys, inverse)
        return keys, inverse


def search_shard(shard: Shard, language: str, query: np.ndarray, depth: int, calibrator: Calibrator,
                 norms: ShardNorms) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best (calibrated cosine, key) of one shard for the shifted query ``query`` (q'), best first."""
    live = len(shard)
    if live == 0 or depth <= 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    length = float(np.linalg.norm(query)) or 1.0
    offset = float(query @ calibrator.offset(language))
    if shard.structure == "flat":
        keys, inverse = norms.get(language, shard, calibrator)
        scores = inner_products(shard.stored_vectors(), query.astype(np.float32))
        scores -= np.float32(offset)
        scores *= inverse
        if depth < len(scores):
            top = np.argpartition(-scores, depth - 1)[:depth]
            keys, scores = keys[top], scores[top]
    else:
        _, keys = shard.search(np.ascontiguousarray(query[None, :], dtype=np.float32),
                               min(live, max(WIDEN_FACTOR * depth, depth + WIDEN_MIN)))
        vectors = shard.vectors(keys).astype(np.float64)
        scores = (vectors @ query - offset) / np.maximum(passage_norms(vectors, calibrator, language), 1e-12)
    order = np.lexsort((keys, -scores))[:depth]
    return scores[order].astype(np.float64) / length, keys[order]

