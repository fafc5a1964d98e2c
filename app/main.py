"""The FastAPI application: ``create_app(settings)`` wires configuration, state, routes and telemetry."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.config import Settings
from app.errors import install_error_handlers
from app.http import BodySizeLimit, Options, allowed_methods
from app.openapi import install_docs, install_openapi
from app.routes import audit, documents, embeddings, operations, search
from app.state import ServiceState, StartupError
from app.telemetry import Telemetry, TelemetryMiddleware
from app.web import routes as web

logger = logging.getLogger("babelsearch")

DESCRIPTION = """Multilingual semantic search: passages ranked by meaning, not by language.

Errors come back as `{"detail": "<what is wrong>"}`; on `/v1/*` in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`. Document writes need the API key
(`Authorization: Bearer <key>` or `X-API-Key: <key>`) configured with `BABELSEARCH_API_KEY`.
`GET /info` lists every limit; too much concurrent encoder work is answered 429 with `Retry-After`."""


def create_app(settings: Settings | None = None, encoder=None, open_collection=None) -> FastAPI:
    """Build the service. ``encoder`` replaces the artifact's ONNX encoder (tests use hand-made vectors);
    ``open_collection(encoder)`` replaces opening ``settings.index_dir`` (app.cluster's search replicas)."""
    settings = settings or Settings()
    telemetry = Telemetry()
    state = ServiceState(settings, telemetry, encoder=encoder, open_collection=open_collection)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            state.start()
        except StartupError as exc:
            logger.error("startup failed: %s", exc)
            raise
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(title="babelsearch", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.service = state
    install_error_handlers(app, allowed_methods)
    for module in (search, embeddings, documents, audit, operations):
        app.include_router(module.router)
    web.install(app)
    install_docs(app)
    install_openapi(app, settings)
    app.add_middleware(Options)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)
    return app
