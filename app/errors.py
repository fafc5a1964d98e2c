"""One error body everywhere: ``{"detail": "<a sentence saying what is wrong>"}``."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("babelsearch")


def _location(loc: tuple) -> str:
    """("body", "queries", 0, "text") -> "queries[0].text"; ("body", 0, "id") -> "body[0].id"."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header") and not isinstance(parts[1], int):
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def describe_validation_errors(errors: list[dict]) -> str:
    """pydantic's error list -> one readable sentence per problem, e.g. ``k: must be <= 100 (got 500)``."""
    messages = []
    for error in errors:
        kind, loc = error.get("type", ""), tuple(error.get("loc", ()))
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "could not parse")
            position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
            messages.append(f"malformed JSON body: {reason}" + (f" (at character {position})" if position is not None else ""))
            continue
        if kind == "missing" and loc == ("body",):
            messages.append("request body is required (JSON)")
            continue
        message = error.get("msg", "invalid value")
        message = message.removeprefix("Value error, ")
        where = _location(loc)
        shown = error.get("input")
        got = ""
        if kind != "missing" and isinstance(shown, (str, int, float, bool)) and len(repr(shown)) <= 60:
            got = f" (got {shown!r})"
        elif kind.endswith("_type") and isinstance(shown, (list, dict)):  # e.g. a dict where a list belongs
            got = f" (got {'an object' if isinstance(shown, dict) else 'a list'})"
        messages.append(f"{where}: {message}{got}")
    return "; ".join(messages) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation_errors(list(exc.errors()))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
