"""Health, readiness, metrics and the service's front page."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__
from app.dependencies import get_state
from app.state import ServiceState

router = APIRouter(tags=["operations"])


@router.get("/livez")
def livez() -> dict:
    """The process is up (says nothing about the model or the index)."""
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "still loading, or failed; `detail` says why"}})
def readyz(state: ServiceState = Depends(get_state)):
    """200 once the model and the index are loaded (and the seed collection ingested), 503 before."""
    if not state.ready:
        return JSONResponse({"detail": f"not ready: {state.reason}"}, status_code=503, headers={"Retry-After": "5"})
    return {"status": "ready", "documents": len(state.collection), "model": state.model_name}


@router.get("/metrics", response_class=Response)
def metrics(state: ServiceState = Depends(get_state)) -> Response:
    """Prometheus text format."""
    if state.collection is not None:
        state.telemetry.set_documents(state.collection.languages())
    return Response(state.telemetry.export(), media_type=CONTENT_TYPE_LATEST)


@router.get("/")
def index(state: ServiceState = Depends(get_state)) -> dict:
    """What is running here."""
    encoder, collection, settings = state.encoder, state.collection, state.settings
    info = {
        "name": "babelsearch",
        "version": __version__,
        "ready": state.ready,
        "status": state.reason,
        "docs": "/docs",
        "endpoints": ["POST /search", "POST /v1/embeddings", "POST /audit", "GET /languages", "POST /documents",
                      "GET /documents/{id}", "DELETE /documents/{id}", "GET /livez", "GET /readyz", "GET /metrics"],
        "writes_enabled": settings.writes_enabled,
    }
    if encoder is not None:
        artifact_info = getattr(encoder, "info", None)
        info["model"] = {
            "name": state.model_name,
            "base_model": getattr(artifact_info, "base_model", None),
            "precision": getattr(encoder, "precision", None),
            "dim": encoder.dim,
            "fingerprint": encoder.fingerprint,
        }
    if collection is not None:
        info["index"] = {"type": collection.index_type, "documents": len(collection),
                         "languages": len(collection.languages())}
    return info
