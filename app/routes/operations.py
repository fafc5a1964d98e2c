"""Health, readiness, metrics, limits and the service's front page.

Every route here is ``async`` and reads only what the state keeps in memory (cached counts, the metrics
registry): none of them runs in the thread pool or waits for the index, so they answer while the encoder
routes are saturated.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__
from encoder.calibration import METHODS, NO_LANGUAGE_METHOD
from app.dependencies import get_state
from app.errors import ErrorBody
from app.limits import describe
from app.state import ServiceState

router = APIRouter(tags=["operations"])


@router.get("/livez")
async def livez() -> dict:
    """The process is up (says nothing about the model or the index)."""
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"model": ErrorBody, "description": "still loading, or failed; `detail` says why",
                                        "headers": {"Retry-After": {"schema": {"type": "integer"}}}}})
async def readyz(state: ServiceState = Depends(get_state)):
    """200 once the model and the index are loaded (and the seed collection ingested), 503 before."""
    if not state.ready:
        return JSONResponse({"detail": f"not ready: {state.reason}"}, status_code=503, headers={"Retry-After": "5"})
    return {"status": "ready", "documents": state.documents, "model": state.model_name}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}})
async def metrics(state: ServiceState = Depends(get_state)) -> Response:
    """Prometheus text format."""
    return Response(state.telemetry.export(), media_type=CONTENT_TYPE_LATEST)


def _model(state: ServiceState) -> dict | None:
    encoder = state.encoder
    if encoder is None:
        return None
    artifact_info = getattr(encoder, "info", None)
    return {
        "name": state.model_name,
        "base_model": getattr(artifact_info, "base_model", None),
        "precision": getattr(encoder, "precision", None),
        "dim": encoder.dim,
        "max_tokens": getattr(getattr(encoder, "contract", None), "max_length", None),
        "fingerprint": encoder.fingerprint,
    }


@router.get("/info")
async def info(state: ServiceState = Depends(get_state)) -> dict:
    """What is served and every limit it enforces (as TEI's `/info`): model, version, limits (with the
    `BABELSEARCH_*` variable that sets each)."""
    return {"name": "babelsearch", "version": __version__, "ready": state.ready, "model": _model(state),
            "limits": describe(state.settings), "writes_enabled": state.settings.writes_enabled,
            "calibration": _calibration(state)}


def _calibration(state: ServiceState) -> dict:
    source, detector = state.calibration, state.detector
    return {"default": state.settings.calibration, "methods": list(METHODS), "fallback": NO_LANGUAGE_METHOD,
            "min_collection_count": state.settings.calibration_min_count,
            "artifact_languages": source.languages if source is not None else [],
            "detected_languages": sorted(detector.languages) if detector is not None else [],
            "detection_min_confidence": detector.min_confidence if detector is not None else None,
            "docs": "docs/calibration.md"}


@router.get("/")
async def index(state: ServiceState = Depends(get_state)) -> dict:
    """What is running here."""
    collection = state.collection
    info = {
        "name": "babelsearch",
        "version": __version__,
        "ready": state.ready,
        "status": state.reason,
        "docs": "/docs",
        "endpoints": ["POST /search", "POST /v1/embeddings", "POST /audit", "GET /languages", "POST /documents",
                      "GET /documents/{id}", "DELETE /documents/{id}", "GET /info", "GET /livez", "GET /readyz",
                      "GET /metrics"],
        "writes_enabled": state.settings.writes_enabled,
    }
    model = _model(state)
    if model is not None:
        info["model"] = model
    if collection is not None:
        info["index"] = {"type": collection.index_type, "documents": state.documents,
                         "languages": len(state.language_counts)}
    return info
