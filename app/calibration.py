"""The service's side of calibration: which statistics it loads, which detector labels queries, and how one
request's method is chosen (``encoder.calibration`` holds the maths, ``indexes.calibrated`` the search)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from encoder import TextEncoder
from encoder.calibration import ArtifactCalibration, CalibrationSource, Calibrator, QueryPlan
from indexes.languages import Detection, LanguageDetector

logger = logging.getLogger("babelsearch")


def load_source(settings, encoder: TextEncoder) -> CalibrationSource:
    """The artifact's statistics for the served precision (none for an artifact exported before
    calibration: the collection's own statistics are then all there is)."""
    artifact = None
    rank = settings.calibration_subspace_rank
    try:
        loaded = ArtifactCalibration.load(settings.model_dir, int(encoder.dim))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the calibration statistics of %s: %s", settings.model_dir, exc)
        loaded = None
    if loaded is not None:
        artifact = loaded.statistics.get(encoder.precision)
        rank = rank or loaded.subspace_rank
    if artifact is None:
        logger.warning("%s has no calibration statistics for %s: calibrating from the collection alone "
                       "(add them with `python -m trainer.calibration --model %s`)",
                       settings.model_dir, settings.precision, settings.model_dir)
    return CalibrationSource(artifact, int(encoder.dim), **({"subspace_rank": rank} if rank else {}),
                             min_collection_count=settings.calibration_min_count)


def detector_languages(source: CalibrationSource, collection_languages, extra) -> set[str]:
    """What the service detects among: the model's calibrated languages, the collection's, the configured."""
    return set(source.languages) | set(collection_languages) | set(extra or ())


@dataclass(frozen=True)
class QueryCalibration:
    calibrator: Calibrator
    plan: QueryPlan
    detection: Detection | None  # None when the client gave the language

    def describe(self) -> dict:
        """What a response says about it: requested and applied method, why it fell back, statistics' origin."""
        described = self.calibrator.describe()
        return {"requested": self.plan.requested, "method": self.plan.method, "note": self.plan.note,
                **({"rank": described["rank"]} if "rank" in described else {}),
                "statistics": described.get("statistics", {})}


def for_query(source: CalibrationSource, detector: LanguageDetector, collection, text: str, given: str | None,
              requested: str) -> QueryCalibration:
    """Detect the query's language unless given, then resolve the method against the live statistics."""
    detection = None if given else detector.detect(text)
    language = given or detection.language
    statistics = collection.statistics()
    calibrator, plan = source.resolve(requested, statistics, language, reliable=language is not None)
    return QueryCalibration(calibrator, plan, detection)


def for_texts(source: CalibrationSource, detector: LanguageDetector, collection, texts: list[str],
              given: str | None, requested: str) -> tuple[QueryCalibration, list[str | None]]:
    """One method for a whole /v1/embeddings request (vectors of one response stay comparable): each
    text's language (given, or detected), and the fallback for all of them as soon as one needs it."""
    if requested == "none":
        return QueryCalibration(Calibrator("none", source.dim), QueryPlan("none", "none", None), None), [None] * len(texts)
    languages = [given] * len(texts) if given else [found.language for found in detector.detect_many(texts)]
    statistics = collection.statistics()
    resolved = {language: source.resolve(requested, statistics, language, reliable=language is not None)
                for language in dict.fromkeys(languages)}
    calibrator, plan = next((r for r in resolved.values() if r[1].method != requested), next(iter(resolved.values())))
    return QueryCalibration(calibrator, plan, None), languages


def calibrate_vectors(calibration: QueryCalibration, vectors: np.ndarray, languages: list[str | None]) -> np.ndarray:
    """Calibrated, normalised copies of embedding vectors (what /v1/embeddings returns with a method)."""
    if calibration.calibrator.method == "none":
        return vectors
    return calibration.calibrator.transform(vectors, languages)
