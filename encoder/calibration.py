"""Language-bias calibration of embeddings: numpy only, no torch, no index.

A multilingual encoder puts every text of one language near that language's mean vector, so a query
scores its own language's passages higher whatever they say. Calibration removes that component:

- ``none``: the raw vectors.
- ``center``: subtract each language's mean passage vector from its passages; a query subtracts the mean
  of *its* language (so the query's language must be known).
- ``subspace``: project every vector off the top-r directions of the matrix of language means (the
  language-identity subspace). Needs no language for the query or the passage.

Every method is one affine map per language, ``T_L(x) = P (x - m_L)`` with ``P = I - B^T B`` (``B``: r
orthonormal rows, r = 0 for ``center``) and ``m_L`` the language's mean (0 for ``subspace``), followed by
L2 normalisation. The score of query q (language l) and passage d (language L) is the cosine of the two
calibrated vectors. Because P is a symmetric projection, that is::

    score = q' . (d - m_L) / (|q'| * |P (d - m_L)|)      with  q' = P (q - m_l)

so the raw stored passage vectors can be searched with the shifted query ``q'`` and rescored exactly with
one offset and one norm per passage (``indexes.calibrated`` does that over FAISS shards). ``transform``
below is the reference implementation: it calibrates vectors explicitly, for the evaluator and the tests.

Statistics (``LanguageStatistics``: per-language vector sums and counts) come from two places: the model
artifact (``calibration.json``, estimated at export from parallel NTREX-128 sentences, so an empty
collection is calibrated from its first request) and the collection itself (running sums kept in the
same transaction as its writes). ``Calibrator.from_statistics`` decides which one each language uses.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from encoder.files import write_json_atomic
from encoder.protocol import TextEncoder

METHODS = ("none", "center", "subspace")
DEFAULT_METHOD = "center"
# Without a (confident) query language ``center`` cannot shift the query; this method needs none.
NO_LANGUAGE_METHOD = "subspace"
CALIBRATION_FILE = "calibration.json"
FORMAT = "babelsearch-calibration/1"
# Below this many passages the collection's own mean of a language is too noisy (and too topic-bound) to
# replace the artifact's; see docs/calibration.md for the measurement behind the number.
MIN_COLLECTION_COUNT = 200
DEFAULT_SUBSPACE_RANK = 10  # chosen on the XQuAD-R train half (docs/calibration.md)


_KEYS = itertools.count(1)


class CalibrationError(ValueError):
    """An unknown method, or statistics that do not fit the encoder (dimension, format)."""


def check_method(method: str) -> str:
    if method not in METHODS:
        raise CalibrationError(f"calibration must be one of {', '.join(METHODS)}, got {method!r}")
    return method


# ------------------------------------------------------------------------------------------ statistics


@dataclass
class LanguageStatistics:
    """Sums (float64) and counts of raw passage vectors per language."""

    dim: int
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_vectors(cls, vectors_by_language: Mapping[str, np.ndarray], dim: int | None = None) -> "LanguageStatistics":
        arrays = {lang: np.asarray(v, dtype=np.float64) for lang, v in vectors_by_language.items()}
        dim = dim if dim is not None else next(iter(arrays.values())).shape[1]
        stats = cls(dim)
        for language, array in sorted(arrays.items()):
            if len(array):
                stats.sums[language] = array.sum(axis=0)
                stats.counts[language] = int(len(array))
        return stats

    def mean(self, language: str) -> np.ndarray | None:
        count = self.counts.get(language, 0)
        return self.sums[language] / count if count > 0 else None

    @property
    def languages(self) -> list[str]:
        return sorted(language for language, count in self.counts.items() if count > 0)

    def to_dict(self) -> dict:
        return {language: {"count": self.counts[language], "sum": self.sums[language].tolist()}
                for language in self.languages}

    @classmethod
    def from_dict(cls, data: Mapping, dim: int) -> "LanguageStatistics":
        stats = cls(dim)
        for language, entry in data.items():
            total = np.asarray(entry["sum"], dtype=np.float64)
            if total.shape != (dim,):
                raise CalibrationError(f"statistics for {language!r} have shape {total.shape}, expected ({dim},)")
            stats.sums[language], stats.counts[language] = total, int(entry["count"])
        return stats


@dataclass
class ArtifactCalibration:
    """``calibration.json`` of a model artifact: per precision, the statistics and where they came from."""

    statistics: dict[str, LanguageStatistics]  # precision -> statistics
    source: str
    subspace_rank: int = DEFAULT_SUBSPACE_RANK
    extra: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        data = {"format": FORMAT, "source": self.source, "subspace_rank": self.subspace_rank, **self.extra,
                "precisions": {p: s.to_dict() for p, s in sorted(self.statistics.items())}}
        path = Path(directory) / CALIBRATION_FILE
        write_json_atomic(path, data)
        return path

    @classmethod
    def load(cls, directory: str | Path, dim: int) -> "ArtifactCalibration | None":
        """The artifact's statistics, or None when it has none (an artifact exported before calibration)."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise CalibrationError(f"{path} is not a {FORMAT} file")
        extra = {k: v for k, v in data.items() if k not in ("format", "source", "subspace_rank", "precisions")}
        return cls({p: LanguageStatistics.from_dict(s, dim) for p, s in data["precisions"].items()},
                   data.get("source", "unknown"), int(data.get("subspace_rank", DEFAULT_SUBSPACE_RANK)), extra)


def estimate_statistics(encoder: TextEncoder, texts_by_language: Mapping[str, Sequence[str]]) -> LanguageStatistics:
    """Statistics of ``encoder``'s passage vectors of the given texts (``.encode(texts, "passage")``)."""
    return LanguageStatistics.from_vectors(
        {language: encoder.encode(list(texts), "passage") for language, texts in sorted(texts_by_language.items())},
        dim=int(encoder.dim))


# ----------------------------------------------------------------------------------------- calibration


def language_subspace(means: np.ndarray, rank: int) -> np.ndarray:
    """(r, dim) orthonormal rows: the top-``rank`` right singular vectors of the language-mean matrix,
    centred on its own mean (the shared direction of all languages carries meaning, not language)."""
    centred = means - means.mean(axis=0, keepdims=True)
    rank = max(0, min(rank, len(means) - 1))
    if rank == 0:
        return np.zeros((0, means.shape[1]))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:rank]


@dataclass(frozen=True)
class Origin:
    """Where one language's mean comes from, for the response: ``artifact`` or ``collection``, with counts."""

    source: str
    count: int

    def to_dict(self) -> dict:
        return {"source": self.source, "count": self.count}


@dataclass(frozen=True)
class QueryPlan:
    """How one query is calibrated: the method actually applied (it may fall back) and why."""

    requested: str
    method: str
    query_language: str | None
    note: str | None = None


class Calibrator:
    """Per-language affine maps for one method, built from applied statistics. Immutable once built."""

    def __init__(self, method: str, dim: int, means: Mapping[str, np.ndarray] | None = None,
                 basis: np.ndarray | None = None, origins: Mapping[str, Origin] | None = None) -> None:
        self.method = check_method(method)
        self.key = next(_KEYS)  # identifies this calibrator in caches of numbers derived from it
        self.dim = dim
        self.means = {lang: np.asarray(m, dtype=np.float64) for lang, m in (means or {}).items()}
        self.basis = np.zeros((0, dim)) if basis is None else np.asarray(basis, dtype=np.float64)
        self.origins = dict(origins or {})
        # a language no statistics know (a query's, never a shard's: every shard's language has the
        # collection's own sums) is centred on the mean of the known languages' means
        self.fallback_mean = np.mean(list(self.means.values()), axis=0) if self.means else None

    # --- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_statistics(cls, method: str, artifact: LanguageStatistics | None, collection: LanguageStatistics | None,
                        dim: int, subspace_rank: int = DEFAULT_SUBSPACE_RANK,
                        min_collection_count: int = MIN_COLLECTION_COUNT) -> "Calibrator":
        """Each language's mean: the collection's own once it holds ``min_collection_count`` passages of
        it (and, for a language the artifact lacks, from the first one); the artifact's before that,
        moved by the *domain shift*: the collection's mean minus the artifact's, averaged over the
        languages both know. NTREX news sentences and a collection's passages differ by more than
        language, and a mean from one source beside a mean from the other would shift whole shards
        against each other (docs/calibration.md measures it)."""
        check_method(method)
        if method == "none":
            return cls("none", dim)
        known = set(artifact.languages) if artifact is not None else set()
        own = {lang: count for lang, count in (collection.counts.items() if collection is not None else ()) if count > 0}
        shared = sorted(known & set(own))
        shift = (np.mean([collection.mean(lang) - artifact.mean(lang) for lang in shared], axis=0) if shared
                 else np.zeros(dim))
        means, origins = {}, {}
        for language in sorted(known | set(own)):
            count = own.get(language, 0)
            if count >= min_collection_count or (count > 0 and language not in known):
                means[language], origins[language] = collection.mean(language), Origin("collection", count)
            else:
                means[language] = artifact.mean(language) + shift
                origins[language] = Origin("artifact", artifact.counts[language])
        if method == "center":
            return cls("center", dim, means, origins=origins)
        if len(means) < 2:
            raise CalibrationError("the subspace method needs statistics for at least two languages")
        basis = language_subspace(np.stack([means[lang] for lang in sorted(means)]), subspace_rank)
        return cls("subspace", dim, basis=basis, origins=origins)

    # --- the maps ----------------------------------------------------------------------------------------

    def offset(self, language: str | None) -> np.ndarray:
        """m_L: what a passage (or query) of ``language`` subtracts before the projection."""
        if self.method != "center":
            return np.zeros(self.dim)
        mean = self.means.get(language) if language is not None else None
        if mean is None:
            mean = self.fallback_mean
        return np.zeros(self.dim) if mean is None else mean

    def knows(self, language: str | None) -> bool:
        return self.method != "center" or (language is not None and language in self.means)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """P x for rows x."""
        if not len(self.basis):
            return vectors
        return vectors - (vectors @ self.basis.T) @ self.basis

    def transform(self, vectors: np.ndarray, languages: Sequence[str | None] | str | None) -> np.ndarray:
        """Reference implementation: calibrated, L2-normalised copies of ``vectors`` (rows), each in its language."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if self.method == "none":
            return vectors.astype(np.float32)
        if languages is None or isinstance(languages, str):
            languages = [languages] * len(vectors)
        offsets = np.stack([self.offset(language) for language in languages]) if len(vectors) else vectors
        out = self.project(vectors - offsets)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def describe(self) -> dict:
        """For responses: the method and, per language, where its statistics come from."""
        out = {"method": self.method}
        if self.method == "subspace":
            out["rank"] = int(len(self.basis))
        if self.origins:
            out["statistics"] = {lang: origin.to_dict() for lang, origin in sorted(self.origins.items())}
        return out


REFRESH_SHARE = 0.01  # rebuild a collection's calibrator once a language's count moved by more than this


class CalibrationSource:
    """Calibrators for one encoder: the artifact's statistics plus a collection's running ones.

    A calibrator is rebuilt only when the collection's counts changed materially (a language appears or
    disappears, crosses ``min_collection_count``, or moves by more than ``REFRESH_SHARE``): the means
    barely move in between, and the search caches numbers derived from each calibrator. Thread-safe."""

    def __init__(self, artifact: LanguageStatistics | None, dim: int, subspace_rank: int = DEFAULT_SUBSPACE_RANK,
                 min_collection_count: int = MIN_COLLECTION_COUNT) -> None:
        self.artifact, self.dim = artifact, dim
        self.subspace_rank, self.min_collection_count = subspace_rank, min_collection_count
        self._cache: dict[str, tuple[dict[str, int], Calibrator]] = {}

    @property
    def languages(self) -> list[str]:
        """The languages the artifact has statistics for (what the model is calibrated for out of the box)."""
        return self.artifact.languages if self.artifact is not None else []

    def calibrator(self, method: str, collection: LanguageStatistics | None) -> Calibrator:
        counts = dict(collection.counts) if collection is not None else {}
        cached = self._cache.get(check_method(method))
        if cached is not None and not self._moved(cached[0], counts):
            return cached[1]
        calibrator = Calibrator.from_statistics(method, self.artifact, collection, self.dim, self.subspace_rank,
                                                self.min_collection_count)
        self._cache[method] = (counts, calibrator)  # a racing rebuild only replaces an equal calibrator
        return calibrator

    def _moved(self, old: dict[str, int], new: dict[str, int]) -> bool:
        if old.keys() != new.keys():
            return True
        least = self.min_collection_count
        return any((old[lang] >= least) != (new[lang] >= least) or abs(new[lang] - old[lang]) > REFRESH_SHARE * old[lang]
                   for lang in new)

    def resolve(self, requested: str, collection: LanguageStatistics | None, query_language: str | None,
                reliable: bool = True) -> tuple[Calibrator, QueryPlan]:
        """The calibrator that serves one query and the plan that says so: ``center`` needs a query
        language that was given or reliably detected and that the statistics know; otherwise the query
        falls back to ``NO_LANGUAGE_METHOD``, and to ``none`` where no statistics allow that either."""
        main = self._try(requested, collection)
        if main is not None and main.knows(query_language) and (reliable or requested != "center"):
            return main, QueryPlan(requested, requested, query_language)
        if main is None:
            why = f"{requested} needs statistics for at least two languages"
        elif not reliable or query_language is None:
            why = "the query language could not be detected reliably"
        else:
            why = f"no statistics for the query language {query_language!r}"
        fallback = self._try(NO_LANGUAGE_METHOD, collection) if requested != NO_LANGUAGE_METHOD else None
        if fallback is None:
            return Calibrator("none", self.dim), QueryPlan(requested, "none", query_language, f"{why}; used none")
        return fallback, QueryPlan(requested, NO_LANGUAGE_METHOD, query_language, f"{why}; used {NO_LANGUAGE_METHOD}")

    def _try(self, method: str, collection: LanguageStatistics | None) -> Calibrator | None:
        try:
            return self.calibrator(method, collection)
        except CalibrationError:  # too few languages with statistics for this method
            return None


def calibrate_for_evaluation(method: str, query_vectors: np.ndarray, query_languages: Sequence[str | None],
                             passage_vectors: np.ndarray, passage_languages: Sequence[str],
                             artifact: LanguageStatistics | None, collection: LanguageStatistics | None = None,
                             subspace_rank: int = DEFAULT_SUBSPACE_RANK,
                             min_collection_count: int = MIN_COLLECTION_COUNT) -> tuple[np.ndarray, np.ndarray, dict]:
    """Queries and passages calibrated as the service ranks them, for a score matrix ``Q @ P.T``.

    A query whose language is None (unsure) or unknown to the statistics falls back to
    ``NO_LANGUAGE_METHOD`` for its whole ranking. The two methods then live in separate halves of a
    concatenated vector ([centred, 0] for a centred query, [0, projected] for a fallback query, both halves
    for a passage), so one inner product gives each query the score of its own method."""
    check_method(method)
    queries, passages = np.asarray(query_vectors, np.float32), np.asarray(passage_vectors, np.float32)
    if method == "none":
        return queries, passages, {"method": "none", "queries_fallback": 0}
    dim = passages.shape[1]
    build = lambda name: Calibrator.from_statistics(name, artifact, collection, dim, subspace_rank, min_collection_count)
    main = build(method)
    info = main.describe()
    fallback = np.asarray([not main.knows(language) for language in query_languages], dtype=bool)
    info["queries_fallback"] = int(fallback.sum())
    q_main, p_main = main.transform(queries, list(query_languages)), main.transform(passages, list(passage_languages))
    if not fallback.any():
        return q_main, p_main, info
    other = build(NO_LANGUAGE_METHOD)
    info["fallback_method"] = NO_LANGUAGE_METHOD
    q_other, p_other = other.transform(queries, None), other.transform(passages, None)
    q = np.concatenate([np.where(fallback[:, None], 0, q_main), np.where(fallback[:, None], q_other, 0)], axis=1)
    return q.astype(np.float32), np.concatenate([p_main, p_other], axis=1), info
