"""The OpenAPI schema (with the running limits written into it) and the offline ``/docs`` and ``/redoc``.

``app.limits.BODY_LIMITS`` becomes ``maxLength`` / ``maxItems`` / ``maximum`` on the fields it bounds, so the
schema says what the service accepts under its configuration. ``docs/openapi.json`` is this schema under the
default settings; regenerate it with ``.venv/bin/python -m app.openapi > docs/openapi.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from app.limits import BODY_LIMITS, Limits, path_parts

STATIC = Path(__file__).resolve().parent / "static"
KEYWORDS = {"chars": ("string", "maxLength"), "items": ("array", "maxItems"), "value": ("integer", "maximum")}


def _branches(root: dict, node: dict) -> list[dict]:
    """``node`` with ``$ref`` followed and ``anyOf`` / ``oneOf`` flattened."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return _branches(root, root["components"]["schemas"][name])
    for key in ("anyOf", "oneOf"):
        if key in node and "properties" not in node:  # a union (an object's anyOf only adds constraints)
            return [leaf for branch in node[key] for leaf in _branches(root, branch)]
    return [node]


def _targets(root: dict, node: dict, parts: list[str]) -> list[dict]:
    nodes = _branches(root, node)
    for part in parts:
        if part == "[*]":
            nodes = [leaf for n in nodes if n.get("type") == "array" for leaf in _branches(root, n["items"])]
        else:
            nodes = [leaf for n in nodes if part in n.get("properties", {})
                     for leaf in _branches(root, n["properties"][part])]
    return nodes


def apply_limits(schema: dict, limits: Limits) -> dict:
    for route_path, rules in BODY_LIMITS.items():
        body = schema["paths"][route_path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        for rule in rules:
            kind, keyword = KEYWORDS[rule.measure]
            for target in _targets(schema, body, path_parts(rule.path)):
                if target.get("type") == kind:
                    target[keyword] = rule.value(limits)
    return schema


def apply_model(schema: dict, dim: int) -> dict:
    """``dimensions`` must equal the served model's dimension (known once the model is loaded)."""
    for target in _targets(schema, {"$ref": "#/components/schemas/EmbeddingsRequest"}, ["dimensions"]):
        if target.get("type") == "integer":
            target.update(minimum=dim, maximum=dim)
    return schema


def install_openapi(app: FastAPI, limits: Limits) -> None:
    built: dict = {}  # model dim (None before the model loads) -> schema

    def openapi() -> dict:
        encoder = app.state.service.encoder
        dim = encoder.dim if encoder is not None else None
        if dim not in built:
            schema = apply_limits(get_openapi(title=app.title, version=app.version, description=app.description,
                                              routes=app.routes), limits)
            built[dim] = apply_model(schema, dim) if dim is not None else schema
        app.openapi_schema = built[dim]
        return app.openapi_schema

    app.openapi = openapi


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, from the assets in app/static/docs (no CDN)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request):
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/static/docs/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/static/docs/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}/static/docs/swagger-ui/favicon-32x32.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}/static/docs/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}/static/docs/swagger-ui/favicon-32x32.png", with_google_fonts=False)


def default_schema() -> dict:
    """The schema under the default settings (what docs/openapi.json holds); no model or index is loaded."""
    from app.config import Settings
    from app.main import create_app

    return create_app(Settings.model_construct()).openapi()  # defaults, whatever BABELSEARCH_* says


if __name__ == "__main__":
    json.dump(default_schema(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
