"""Language-bias calibration: the numpy reference (encoder.calibration), the served scores over FAISS
shards (indexes.calibrated), the collection's running statistics and the fallbacks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from encoder.calibration import (
    ArtifactCalibration,
    CalibrationSource,
    Calibrator,
    LanguageStatistics,
    calibrate_for_evaluation,
)
from indexes import Collection, Document
from indexes import shards as shards_module

ROOT = Path(__file__).resolve().parents[1]
DIM = 24
LANGUAGES = ("en", "de", "ja")


class TableEncoder:
    """Text "v<i>" -> row i of a fixed matrix: vectors chosen by the test, served through the real index."""

    precision = "fp32"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors.astype(np.float32)
        self.fingerprint = f"table-{len(vectors)}"

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def encode(self, texts, kind, *args, **kwargs) -> np.ndarray:
        return self.vectors[[int(t[1:]) for t in texts]] if len(texts) else np.zeros((0, self.dim), np.float32)


def biased_vectors(n_per_language: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Unit vectors = topic + a strong per-language offset, so raw rankings favour the query's language."""
    rng = np.random.default_rng(seed)
    offsets = {lang: rng.normal(size=DIM) * 0.9 for lang in LANGUAGES}
    rows, languages = [], []
    for lang in LANGUAGES:
        topics = rng.normal(size=(n_per_language, DIM))
        rows.append(topics / np.linalg.norm(topics, axis=1, keepdims=True) + offsets[lang] / np.sqrt(DIM) * 3)
        languages += [lang] * n_per_language
    vectors = np.concatenate(rows)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), languages


def build(tmp_path: Path, vectors: np.ndarray, languages: list[str], index_type: str = "flat") -> Collection:
    collection = Collection.open(tmp_path / f"index-{index_type}", TableEncoder(vectors), index_type=index_type)
    collection.add([Document(f"d{i}", f"v{i}", lang) for i, lang in enumerate(languages)])
    return collection


def reference_top(calibrator: Calibrator, query: np.ndarray, query_language: str, vectors: np.ndarray,
                  languages: list[str], k: int) -> tuple[list[str], np.ndarray]:
    scores = calibrator.transform(vectors, languages) @ calibrator.transform(query[None], query_language)[0]
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [f"d{i}" for i in order], scores[order]


def recount(collection: Collection) -> dict:
    return collection._store.recount_stats()


def assert_stats_equal(collection: Collection) -> None:
    running = collection.statistics()
    stored = collection._store.language_stats()
    expected = recount(collection)
    assert set(running.counts) == set(stored) == set(expected)
    for language, (count, total) in expected.items():
        assert running.counts[language] == stored[language][0] == count
        np.testing.assert_allclose(running.sums[language], total, rtol=0, atol=1e-9)
        np.testing.assert_allclose(stored[language][1], total, rtol=0, atol=1e-9)


# --- the reference ------------------------------------------------------------------------------------

def test_none_is_the_identity_and_center_removes_each_language_mean():
    vectors, languages = biased_vectors(50)
    stats = LanguageStatistics.from_vectors({lang: vectors[np.array(languages) == lang] for lang in LANGUAGES})
    assert np.array_equal(Calibrator("none", DIM).transform(vectors, languages), vectors.astype(np.float32))
    center = Calibrator.from_statistics("center", None, stats, DIM, min_collection_count=1)
    calibrated = center.transform(vectors, languages)
    for lang in LANGUAGES:  # what is left of a language's mean is noise
        rows = calibrated[np.array(languages) == lang]
        assert np.linalg.norm(rows.mean(axis=0)) < 0.2 * np.linalg.norm(vectors[np.array(languages) == lang].mean(axis=0))
    np.testing.assert_allclose(np.linalg.norm(calibrated, axis=1), 1.0, atol=1e-5)


def test_subspace_projects_off_the_language_directions():
    vectors, languages = biased_vectors(50)
    stats = LanguageStatistics.from_vectors({lang: vectors[np.array(languages) == lang] for lang in LANGUAGES})
    subspace = Calibrator.from_statistics("subspace", None, stats, DIM, subspace_rank=10, min_collection_count=1)
    assert subspace.basis.shape == (len(LANGUAGES) - 1, DIM)  # rank capped at languages - 1
    np.testing.assert_allclose(subspace.project(subspace.basis), 0, atol=1e-9)
    means = np.stack([stats.mean(lang) for lang in LANGUAGES])
    projected = subspace.project(means)
    # every language mean lands on the same point: no direction tells the languages apart any more
    np.testing.assert_allclose(projected - projected.mean(axis=0), 0, atol=1e-9)


def test_calibration_reduces_language_bias_on_biased_vectors():
    """Queries are noisy copies of passages: raw ranks the query's language first; centring does not."""
    vectors, languages = biased_vectors(60, seed=1)
    stats = LanguageStatistics.from_vectors({lang: vectors[np.array(languages) == lang] for lang in LANGUAGES})
    center = Calibrator.from_statistics("center", None, stats, DIM, min_collection_count=1)
    rng = np.random.default_rng(2)
    hits = {"raw": 0, "center": 0}
    for i in range(0, 60):
        target = 60 + i  # a German passage, asked in English: the English passage's offset, its topic
        query = vectors[target] - vectors[60:120].mean(0) + vectors[:60].mean(0) + rng.normal(size=DIM) * 0.02
        query /= np.linalg.norm(query)
        hits["raw"] += int(np.argmax(vectors @ query) == target)
        hits["center"] += int(reference_top(center, query, "en", vectors, languages, 1)[0][0] == f"d{target}")
    assert hits["center"] > 0.9 * 60 and hits["raw"] < 0.3 * 60


# --- served scores = reference -------------------------------------------------------------------------

@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("method", ["center", "subspace"])
def test_served_scores_equal_the_numpy_reference(tmp_path, monkeypatch, index_type, method):
    monkeypatch.setattr(shards_module, "IVF_MIN_SIZE", 100)
    monkeypatch.setattr(shards_module, "IVF_NPROBE_SHARE", 1.0)  # probe every list: this tests the rescoring
    vectors, languages = biased_vectors(300)
    queries, query_languages = biased_vectors(8, seed=5)
    collection = build(tmp_path, vectors, languages, index_type)
    try:
        assert collection.manifest["shards"]["en"] == ("flat" if index_type == "flat" else index_type)
        stats = collection.statistics()
        calibrator = Calibrator.from_statistics(method, None, stats, DIM, min_collection_count=1)
        for query, query_language in zip(queries, query_languages):
            for k, per_language in ((10, None), (5, 2), (900, None)):
                hits = collection.search(query, k=k, per_language=per_language, calibrator=calibrator,
                                         query_language=query_language)
                ids, scores = reference_top(calibrator, query, query_language, vectors, languages, len(vectors))
                score_of = dict(zip(ids, scores))
                served = np.array([hit.score for hit in hits])
                np.testing.assert_allclose(served, [score_of[hit.id] for hit in hits], atol=1e-5)
                assert np.all(np.diff(served) <= 1e-7)  # best first
                if per_language is None:
                    expected = ids[:k]
                    overlap = len(set(expected) & {hit.id for hit in hits}) / len(expected)
                    assert overlap == 1.0 if index_type != "hnsw" or k >= len(vectors) else overlap >= 0.9
    finally:
        collection.close()


def test_calibration_none_reproduces_raw_scores_exactly(tmp_path):
    vectors, languages = biased_vectors(100)
    collection = build(tmp_path, vectors, languages)
    try:
        for query in vectors[:5]:
            raw = collection.search(query, k=20)
            none = collection.search(query, k=20, calibrator=Calibrator("none", DIM), query_language="en")
            assert [(h.id, h.score) for h in raw] == [(h.id, h.score) for h in none]
    finally:
        collection.close()


def test_calibrated_ranking_changes_the_order_of_a_biased_collection(tmp_path):
    vectors, languages = biased_vectors(100)
    collection = build(tmp_path, vectors, languages)
    try:
        stats = collection.statistics()
        center = Calibrator.from_statistics("center", None, stats, DIM, min_collection_count=1)
        raw = collection.search(vectors[0], k=30)
        calibrated = collection.search(vectors[0], k=30, calibrator=center, query_language="en")
        assert sum(h.language == "en" for h in raw) > sum(h.language == "en" for h in calibrated)
    finally:
        collection.close()


# --- running statistics ----------------------------------------------------------------------------------

def test_running_statistics_equal_a_recount_after_inserts_updates_deletes_and_reopen(tmp_path):
    vectors, languages = biased_vectors(40)
    encoder = TableEncoder(vectors)
    collection = Collection.open(tmp_path / "index", encoder)
    collection.add([Document(f"d{i}", f"v{i}", lang) for i, lang in enumerate(languages[:80])])
    assert_stats_equal(collection)
    collection.add([Document("d45", "v100", "ja"), Document("d50", "v51", "de")])  # moved to ja; new text
    assert_stats_equal(collection)
    collection.delete([f"d{i}" for i in range(0, 40)])  # every English document: the language disappears
    assert_stats_equal(collection)
    assert "en" not in collection.statistics().counts
    collection.close()
    reopened = Collection.open(tmp_path / "index", encoder)
    try:
        assert_stats_equal(reopened)
        assert reopened.statistics().counts == {"de": 39, "ja": 1}
    finally:
        reopened.close()


def test_a_store_without_statistics_counts_them_on_open(tmp_path):
    import sqlite3

    vectors, languages = biased_vectors(20)
    collection = build(tmp_path, vectors, languages)
    directory = collection.directory
    collection.close()
    with sqlite3.connect(directory / "documents.sqlite3") as db:  # as an index written before calibration
        db.execute("DROP TABLE language_stats")
        db.execute("DELETE FROM state WHERE name = 'language_stats'")
    reopened = Collection.open(directory, TableEncoder(vectors))
    try:
        assert_stats_equal(reopened)
        assert reopened.statistics().counts == {lang: 20 for lang in LANGUAGES}
    finally:
        reopened.close()


KILLED_INGEST = """
import sys, numpy as np
sys.path.insert(0, sys.argv[3])
from tests.test_calibration import TableEncoder, biased_vectors
from indexes import Collection, Document
vectors, languages = biased_vectors(4000)
collection = Collection.open(sys.argv[1], TableEncoder(vectors))
for start in range(0, len(languages), int(sys.argv[2])):
    rows = range(start, start + int(sys.argv[2]))
    collection.add([Document(f"d{i}", f"v{i}", languages[i]) for i in rows])
    collection.delete([f"d{i}" for i in rows if i % 7 == 0])
collection.close()
"""


def test_statistics_survive_kill_9_mid_ingest(tmp_path):
    index = tmp_path / "index"
    process = subprocess.Popen([sys.executable, "-c", KILLED_INGEST, str(index), "50", str(ROOT)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    database, deadline = index / "documents.sqlite3", time.monotonic() + 120
    from tests.test_index_crash import stored_count

    while stored_count(database) < 1500:
        if process.poll() is not None:
            pytest.fail(f"ingest ended before it could be killed: {process.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "ingest too slow"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    vectors, _ = biased_vectors(4000)
    collection = Collection.open(index, TableEncoder(vectors))
    try:
        assert 1500 <= len(collection) < 12000
        assert_stats_equal(collection)
    finally:
        collection.close()


# --- sources, fallbacks --------------------------------------------------------------------------------

def artifact_stats(vectors: np.ndarray, languages: list[str], only: tuple[str, ...]) -> LanguageStatistics:
    return LanguageStatistics.from_vectors({lang: vectors[np.array(languages) == lang] for lang in only})


def test_collection_means_replace_the_artifacts_from_the_minimum_count():
    vectors, languages = biased_vectors(30)
    artifact = artifact_stats(vectors, languages, ("en", "de"))
    collection = LanguageStatistics.from_vectors({"en": vectors[:5], "de": vectors[30:60], "ja": vectors[60:62]})
    calibrator = Calibrator.from_statistics("center", artifact, collection, DIM, min_collection_count=30)
    origins = calibrator.describe()["statistics"]
    assert origins == {"en": {"source": "artifact", "count": 30}, "de": {"source": "collection", "count": 30},
                       "ja": {"source": "collection", "count": 2}}  # ja: the artifact does not know it
    # the artifact's English mean moves by the domain shift: collection minus artifact, over en and de
    shift = np.mean([collection.mean(lang) - artifact.mean(lang) for lang in ("en", "de")], axis=0)
    np.testing.assert_allclose(calibrator.means["en"], artifact.mean("en") + shift)
    np.testing.assert_array_equal(calibrator.means["de"], collection.mean("de"))


def test_a_one_language_collection_is_calibrated_and_says_how(tmp_path):
    vectors, languages = biased_vectors(30)
    source = CalibrationSource(None, DIM, min_collection_count=1)
    collection = LanguageStatistics.from_vectors({"en": vectors[:30]})
    calibrator, plan = source.resolve("center", collection, "en")
    assert (calibrator.method, plan.method, plan.note) == ("center", "center", None)
    calibrator, plan = source.resolve("subspace", collection, "en")  # one language: no language subspace
    assert calibrator.method == "none" and plan.method == "none" and "two languages" in plan.note
    calibrator, plan = source.resolve("center", LanguageStatistics(DIM), None)  # empty, nothing known
    assert calibrator.method == "none" and "used none" in plan.note


def test_an_unknown_or_unsure_query_language_falls_back_to_the_language_free_method():
    vectors, languages = biased_vectors(30)
    source = CalibrationSource(artifact_stats(vectors, languages, LANGUAGES), DIM)
    calibrator, plan = source.resolve("center", None, "sw")
    assert calibrator.method == "subspace" and plan.method == "subspace" and "'sw'" in plan.note
    calibrator, plan = source.resolve("center", None, "en", reliable=False)
    assert calibrator.method == "subspace" and "reliably" in plan.note
    calibrator, plan = source.resolve("center", None, "en")
    assert calibrator.method == "center" and plan.note is None


def test_the_source_rebuilds_only_when_the_counts_move():
    vectors, languages = biased_vectors(300)
    source = CalibrationSource(None, DIM, min_collection_count=1)
    first = LanguageStatistics.from_vectors({"en": vectors[:200], "de": vectors[300:500]})
    calibrator = source.calibrator("center", first)
    nearly = LanguageStatistics.from_vectors({"en": vectors[:201], "de": vectors[300:500]})
    assert source.calibrator("center", nearly) is calibrator
    moved = LanguageStatistics.from_vectors({"en": vectors[:210], "de": vectors[300:500]})
    assert source.calibrator("center", moved) is not calibrator


def test_artifact_statistics_round_trip(tmp_path):
    vectors, languages = biased_vectors(10)
    stats = artifact_stats(vectors, languages, LANGUAGES)
    ArtifactCalibration({"fp32": stats}, "test", subspace_rank=4).save(tmp_path)
    loaded = ArtifactCalibration.load(tmp_path, DIM)
    assert loaded.subspace_rank == 4 and loaded.source == "test"
    for lang in LANGUAGES:
        np.testing.assert_array_equal(loaded.statistics["fp32"].mean(lang), stats.mean(lang))
    assert ArtifactCalibration.load(tmp_path / "missing", DIM) is None


def test_evaluation_scores_each_query_with_its_own_method():
    vectors, languages = biased_vectors(40)
    stats = artifact_stats(vectors, languages, LANGUAGES)
    queries, query_languages = vectors[:6], ["en", "en", None, "de", "sw", "ja"]
    q, p, info = calibrate_for_evaluation("center", queries, query_languages, vectors, languages, stats)
    assert info["queries_fallback"] == 2 and info["fallback_method"] == "subspace"
    center = Calibrator.from_statistics("center", stats, None, DIM)
    subspace = Calibrator.from_statistics("subspace", stats, None, DIM)
    scores = q @ p.T
    for i, lang in enumerate(query_languages):
        own = center if lang in ("en", "de", "ja") else subspace
        expected = own.transform(vectors, languages if own is center else None) @ own.transform(queries[i:i + 1], lang)[0]
        np.testing.assert_allclose(scores[i], expected, atol=1e-5)


def test_the_encoders_used_here_satisfy_the_declared_protocol(tiny_artifact):
    from encoder import OnnxEncoder, TextEncoder
    from tests.app_fixtures import GridEncoder

    assert isinstance(OnnxEncoder(tiny_artifact, "fp32"), TextEncoder)
    assert isinstance(GridEncoder(["A"], ["en"]), TextEncoder)
    assert isinstance(TableEncoder(np.zeros((1, DIM))), TextEncoder)
