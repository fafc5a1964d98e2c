"""Errors: the domain exceptions, the one table mapping them to HTTP, and the two error bodies.

Routes and services raise the exceptions below (never ``HTTPException``); the handlers render them, FastAPI's
validation errors and Starlette's own (404, 405) alike: ``{"detail": "<a sentence>"}``, and on ``/v1/*``
OpenAI's ``{"error": {"message", "type", "param", "code"}}``. A message never echoes a whole input: it is cut
at ``MAX_MESSAGE_CHARS`` and only short values are quoted.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("babelsearch")

MAX_MESSAGE_CHARS = 2000
MAX_LISTED_PROBLEMS = 5  # validation problems spelled out in one message; the rest are counted
RETRY_AFTER_SECONDS = {"overloaded": 1, "not_ready": 5}


class ServiceError(Exception):
    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.headers = message, param, dict(headers or {})


class BadRequest(ServiceError):
    """The body is not JSON: invalid UTF-8, a syntax error, nesting too deep."""


class UnsupportedMediaType(ServiceError):
    """A body that is not sent as JSON."""


class InvalidInput(ServiceError):
    """Well-formed JSON with a value the service cannot take."""


class LimitExceeded(InvalidInput):
    """A value over one of ``app.limits``."""


class TooLarge(LimitExceeded):
    """The request as a whole is too big (bytes, tokens)."""


class Unauthorized(ServiceError):
    """No API key where one is needed."""


class Forbidden(ServiceError):
    """A wrong API key, or writes disabled."""


class NotFound(ServiceError):
    pass


class Overloaded(ServiceError):
    """Too much work in progress; retry after ``Retry-After`` seconds."""


class NotReady(ServiceError):
    """Model, index or seed still loading (or failed)."""


# The table: exception -> (HTTP status, OpenAI error type, code). An exception uses its first class listed here.
ERRORS: dict[type[ServiceError], tuple[int, str, str]] = {
    BadRequest: (400, "invalid_request_error", "malformed_body"),
    Unauthorized: (401, "authentication_error", "missing_api_key"),
    Forbidden: (403, "permission_error", "forbidden"),
    NotFound: (404, "not_found_error", "not_found"),
    TooLarge: (413, "invalid_request_error", "too_large"),
    UnsupportedMediaType: (415, "invalid_request_error", "unsupported_media_type"),
    LimitExceeded: (422, "invalid_request_error", "limit_exceeded"),
    InvalidInput: (422, "invalid_request_error", "invalid_value"),
    Overloaded: (429, "rate_limit_error", "overloaded"),
    NotReady: (503, "service_unavailable_error", "not_ready"),
}
# Statuses Starlette answers by itself (unknown path, wrong method) -> (OpenAI error type, code).
HTTP_STATUSES = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}
DESCRIPTIONS = {
    400: "the body is not valid UTF-8 JSON (the message gives the byte or character offset)",
    401: "missing API key",
    403: "wrong API key, or writes disabled (no BABELSEARCH_API_KEY)",
    404: "no such document (or, for /audit, no such document id or group)",
    413: "request body or token count over a limit (GET /info lists them)",
    415: "the body is not sent as `Content-Type: application/json`",
    422: "a value the service cannot take; the message names the field",
    429: "the encoder's queue is full (or, for /audit, another audit runs): retry after `Retry-After` seconds",
    503: "not ready yet (model, index or seed loading) or failed: the message says why",
}


def classify(exc: ServiceError) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return 500, "server_error", "internal_error"


class ErrorBody(BaseModel):
    detail: str


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError


def error_responses(*statuses: int, openai: bool = False) -> dict:
    """The OpenAPI ``responses`` for these error statuses (their body, and the headers they carry)."""
    out = {}
    for status in statuses:
        entry: dict = {"model": OpenAIErrorBody if openai else ErrorBody, "description": DESCRIPTIONS[status]}
        if status in (429, 503):
            entry["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[status] = entry
    return out


def safe_message(message: str) -> str:
    """Cut to MAX_MESSAGE_CHARS and made UTF-8-encodable (a lone surrogate would crash the JSON encoder)."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message) - MAX_MESSAGE_CHARS} more characters)"
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def error_response(path: str, status: int, message: str, *, type: str, code: str | None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    message = safe_message(message)
    if is_openai_path(path):
        body: dict = {"error": {"message": message, "type": type, "param": param and safe_message(param),
                                "code": code}}
    else:
        body = {"detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _location(loc: tuple) -> str:
    """("body", "queries", 0, "text") -> "queries[0].text"; ("body", 0, "id") -> "body[0].id"."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header") and not isinstance(parts[1], int):
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _describe(error: dict) -> str:
    kind, loc = error.get("type", ""), tuple(error.get("loc", ()))
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "could not parse")
        return f"malformed JSON body: {reason}"
    if kind == "missing" and loc == ("body",):
        return "request body is required (JSON)"
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    shown, got = error.get("input"), ""
    if kind != "missing" and isinstance(shown, (str, int, float, bool)) and len(repr(shown)) <= 60:
        got = f" (got {shown!r})"
    elif kind.endswith("_type") and isinstance(shown, (list, dict)):  # e.g. a dict where a list belongs
        got = f" (got {'an object' if isinstance(shown, dict) else 'a list'})"
    return f"{_location(loc)}: {message}{got}"


def describe_validation_errors(errors: list[dict]) -> str:
    """pydantic's error list -> one readable sentence per problem, e.g. ``k: must be <= 100 (got 500)``;
    at most MAX_LISTED_PROBLEMS of them, then a count of the rest."""
    messages = [_describe(error) for error in errors[:MAX_LISTED_PROBLEMS]]
    if len(errors) > MAX_LISTED_PROBLEMS:
        messages.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more problems")
    return "; ".join(messages) or "invalid request"


def install_error_handlers(app: FastAPI, allowed_methods) -> None:
    """``allowed_methods(app, path)``: the ``Allow`` header of a 405."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        status, kind, code = classify(exc)
        headers = dict(exc.headers)
        if code in RETRY_AFTER_SECONDS:
            headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS[code]))
        return error_response(request.url.path, status, exc.message, type=kind, code=code, param=exc.param,
                              headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        param = _location(tuple(errors[0].get("loc", ()))) if errors else None
        return error_response(request.url.path, 422, describe_validation_errors(errors),
                              type="invalid_request_error", code="invalid_value", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request.app, request.scope["path"])
            detail = f"method {request.method} not allowed on {request.scope['path']}; allowed: {headers['Allow']}"
        kind, code = HTTP_STATUSES.get(exc.status_code, ("invalid_request_error", None))
        return error_response(request.url.path, exc.status_code, detail, type=kind, code=code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}", type="server_error",
                              code="internal_error")
