"""``POST /audit``: how language-biased is this service's ranking on its own collection?"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import HTMLResponse, Response

from app.audit import run_audit
from app.audit_report import render_html, render_png
from app.dependencies import audit_slot
from app.errors import error_responses
from app.http import CheckedRoute
from app.schemas import AuditRequest
from app.state import ServiceState

router = APIRouter(tags=["audit"], route_class=CheckedRoute)


@router.post(
    "/audit",
    responses={200: {"content": {"application/json": {}, "image/png": {}, "text/html": {}},
                     "description": "the audit as JSON, a PNG bar chart, or an HTML page with both"},
               **error_responses(400, 404, 413, 415, 422, 429, 503)},
)
def audit(
    body: AuditRequest | None = Body(None),
    format: Literal["json", "png", "html"] = Query("json", description="json (default), png or html"),
    state: ServiceState = Depends(audit_slot),
):
    """Rank the whole collection for each audit query and report rank distance (0 = translations ranked
    together), multilingual mAP, recall@k, language share of the top-k and how often the query-language
    translation comes first. Without `queries`, every document of a multi-language group queries for
    its translations (self-audit). The ranking audited is the one /search serves (`calibration`, default the
    service's); `compare` gives the raw (`none`) figures beside it.

    Each query ranks the whole collection, so queries × documents is capped (`cap` in the report:
    BABELSEARCH_AUDIT_MAX_RANKED); a self-audit samples down to it, explicit queries above it get 422.
    One audit runs at a time (429 otherwise)."""
    report = run_audit(body or AuditRequest(), state.collection, state.encoder, state.settings, state.calibration,
                       state.detector, state.settings.calibration)
    if format == "png":
        return Response(render_png(report), media_type="image/png")
    if format == "html":
        return HTMLResponse(render_html(report))
    return report
