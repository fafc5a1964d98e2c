"""Route dependencies: the running state, readiness and the API key for document writes."""
from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.state import ServiceState

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <BABELSEARCH_API_KEY>`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or `X-API-Key: <key>`")


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def ready_state(state: ServiceState = Depends(get_state)) -> ServiceState:
    if not state.ready:
        raise HTTPException(503, f"service not ready: {state.reason}", headers={"Retry-After": "5"})
    return state


def require_api_key(
    state: ServiceState = Depends(ready_state),
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header_key: str | None = Depends(_api_key_header),
) -> ServiceState:
    configured = state.settings.api_key
    if configured is None:
        raise HTTPException(403, "document writes are disabled: start the service with BABELSEARCH_API_KEY set "
                                 "and send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    given = bearer.credentials if bearer is not None else header_key
    if not given:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(given.encode(), configured.get_secret_value().encode()):
        raise HTTPException(403, "invalid API key")
    return state
