"""Route dependencies: the running state, readiness, the API key, and admission to encoder work.

All of them are ``async``: FastAPI runs them on the event loop, never in the thread pool that the encoder
routes occupy, so they cannot queue behind the encoder.
"""
from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Forbidden, NotReady, Unauthorized
from app.state import ServiceState

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <BABELSEARCH_API_KEY>`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or `X-API-Key: <key>`")


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


async def ready_state(state: ServiceState = Depends(get_state)) -> ServiceState:
    if not state.ready:
        raise NotReady(f"service not ready: {state.reason}")
    return state


async def require_api_key(
    request: Request,
    state: ServiceState = Depends(ready_state),
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header_key: str | None = Depends(_api_key_header),
) -> ServiceState:
    configured = state.settings.api_key
    if configured is None:
        raise Forbidden("document writes are disabled: start the service with BABELSEARCH_API_KEY set "
                        "and send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    how = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    if bearer is None and "authorization" in request.headers:  # present but not "Bearer <key>": never ignored
        raise Unauthorized(f"missing API key: the Authorization header is not 'Bearer <key>'; {how}",
                           headers={"WWW-Authenticate": "Bearer"})
    given = [key for key in (bearer.credentials if bearer is not None else None, header_key) if key]
    if not given:
        raise Unauthorized(f"missing API key: {how}", headers={"WWW-Authenticate": "Bearer"})
    expected = configured.get_secret_value().encode()
    if not all(secrets.compare_digest(key.encode(), expected) for key in given):  # both, when both are sent
        raise Forbidden("invalid API key")
    return state


async def encoder_slot(state: ServiceState = Depends(ready_state)) -> ServiceState:
    """Ready, and room in the encoder's queue (``max_encoder_requests``): 429 at once when it is full, before
    the request takes a worker thread or does any work. Nothing is held: the queue itself (app.batching)
    admits the encode call, and refuses it the same way if the queue filled up meanwhile."""
    state.encoder.admit()
    return state


async def writer_slot(state: ServiceState = Depends(require_api_key)) -> ServiceState:
    state.encoder.admit()
    return state


async def audit_slot(state: ServiceState = Depends(ready_state)):
    state.encoder.admit()
    with state.audit_gate.enter():
        yield state
