"""``POST /audit``: how language-biased is this service's ranking on its own collection?"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import HTMLResponse, Response

from app.audit import run_audit
from app.audit_report import render_html, render_png
from app.dependencies import ready_state
from app.schemas import AuditRequest
from app.state import ServiceState

router = APIRouter(tags=["audit"])


@router.post(
    "/audit",
    responses={200: {"content": {"application/json": {}, "image/png": {}, "text/html": {}},
                     "description": "the audit as JSON, a PNG bar chart, or an HTML page with both"}},
)
def audit(
    body: AuditRequest | None = Body(None),
    format: Literal["json", "png", "html"] = Query("json", description="json (default), png or html"),
    state: ServiceState = Depends(ready_state),
):
    """Rank the whole collection for each audit query and report rank distance (0 = translations ranked
    together), multilingual mAP, recall@k, language share of the top-k and how often the query-language
    translation comes first. Without `queries`, every document of a multi-language group queries for
    its translations (self-audit)."""
    report = run_audit(body or AuditRequest(), state.collection, state.encoder, state.settings.audit_max_queries)
    if format == "png":
        return Response(render_png(report), media_type="image/png")
    if format == "html":
        return HTMLResponse(render_html(report))
    return report
