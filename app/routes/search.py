"""``POST /search`` and ``GET /languages``."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from app.dependencies import encoder_slot, ready_state
from app.errors import error_responses
from app.http import CheckedRoute
from app.calibration import for_query
from app.schemas import CalibrationInfo, LanguageDetectionInfo, SearchHit, SearchRequest, SearchResponse, Timing
from app.state import ServiceState

router = APIRouter(tags=["search"], route_class=CheckedRoute)


@router.post("/search", response_model=SearchResponse, responses=error_responses(400, 413, 415, 422, 429, 503))
def search(body: SearchRequest, state: ServiceState = Depends(encoder_slot)) -> SearchResponse:
    """Rank the collection's passages against a query in any language."""
    start = time.perf_counter()
    requested = body.calibration or state.settings.calibration
    calibration = for_query(state.calibration, state.detector, state.collection, body.query, body.query_language,
                            requested)
    query_language = calibration.plan.query_language
    encoding = time.perf_counter()
    vector = state.encoder.encode([body.query], "query")[0]
    encoded = time.perf_counter()
    hits = state.collection.search(vector, k=body.k, languages=body.languages, per_language=body.per_language,
                                   calibrator=calibration.calibrator, query_language=query_language)
    done = time.perf_counter()
    state.telemetry.searches.labels(method=calibration.plan.method).inc()
    missing = [code for code in body.languages or () if code not in state.language_counts]
    detection = calibration.detection
    return SearchResponse(
        query_language=query_language,
        language_detection=None if detection is None else LanguageDetectionInfo(
            language=detection.language, confidence=round(detection.confidence, 4), best_guess=detection.best_guess),
        calibration=CalibrationInfo(**calibration.describe()),
        warnings=[f"languages: the collection has no documents in {code!r}" for code in missing],
        results=[
            SearchHit(id=h.id, text=h.text, language=h.language, score=float(h.score), rank=rank, group=h.group,
                      metadata=h.metadata or {})
            for rank, h in enumerate(hits, start=1)
        ],
        timing_ms=Timing(encode=round((encoded - encoding) * 1000, 2), search=round((done - encoded) * 1000, 2),
                         total=round((done - start) * 1000, 2)),
    )


@router.get("/languages", responses=error_responses(503))
def languages(state: ServiceState = Depends(ready_state)) -> dict:
    """Languages in the collection with their document counts."""
    counts = state.collection.languages()
    return {"documents": len(state.collection), "languages": dict(sorted(counts.items(), key=lambda kv: str(kv[0])))}
