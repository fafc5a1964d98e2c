"""The FastAPI application: ``create_app(settings)`` wires configuration, state, routes and telemetry."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from app import __version__
from app.config import Settings
from app.errors import install_error_handlers
from app.routes import audit, documents, embeddings, operations, search
from app.state import ServiceState, StartupError
from app.telemetry import Telemetry, TelemetryMiddleware

logger = logging.getLogger("babelsearch")

DESCRIPTION = """Multilingual semantic search: passages ranked by meaning, not by language.

Errors always come back as `{"detail": "<what is wrong>"}`. Document writes need the API key
(`Authorization: Bearer <key>` or `X-API-Key: <key>`) configured with `BABELSEARCH_API_KEY`."""


class BodySizeLimit:
    """Refuse bodies larger than the limit with 413: at once when Content-Length says so, otherwise (chunked
    or undeclared bodies) as soon as the bytes received pass the limit, before the app sees any of them."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(f"{int(length)} bytes", scope, receive, send)
        # Read the whole body first (the JSON routes need all of it anyway), counting what actually arrives:
        # the refusal is sent before the app starts, so there is never a second response.
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # client went away: let the app see the disconnect
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return await self._refuse(f"more than {self.max_bytes} bytes", scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, size: str, scope, receive, send) -> None:
        response = JSONResponse(
            {"detail": f"request body too large: {size}, at most {self.max_bytes} (BABELSEARCH_MAX_REQUEST_BYTES)"},
            status_code=413)
        await response(scope, receive, send)


def create_app(settings: Settings | None = None, encoder=None) -> FastAPI:
    """Build the service. ``encoder`` replaces the artifact's ONNX encoder (tests use hand-made vectors)."""
    settings = settings or Settings()
    telemetry = Telemetry()
    state = ServiceState(settings, telemetry, encoder=encoder)

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

    app = FastAPI(title="babelsearch", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = state
    install_error_handlers(app)
    for module in (search, embeddings, documents, audit, operations):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)
    return app
