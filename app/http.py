"""HTTP plumbing every route shares: the body-size limit, strict JSON bodies checked against the limits before
validation, and methods (``OPTIONS`` answered with ``Allow``; a 405's ``Allow`` lists every method of the path).
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import Match, Mount

from app.errors import BadRequest, ERRORS, TooLarge, UnsupportedMediaType, error_response
from app.limits import check_body, env_name


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
        status, kind, code = ERRORS[TooLarge]
        response = error_response(
            scope["path"], status, f"request body too large: {size}, at most {self.max_bytes} "
                                   f"({env_name('max_request_bytes')})", type=kind, code=code)
        await response(scope, receive, send)


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``, or BadRequest saying where it goes wrong (byte offset for UTF-8,
    line/column and character offset for JSON syntax). NaN and Infinity are refused (not JSON)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8: byte 0x{body[exc.start]:02x} at byte offset {exc.start} "
                         f"({exc.reason})") from None
    try:
        return json.loads(text.removeprefix("\ufeff"), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON body: {exc.msg} at line {exc.lineno}, column {exc.colno} "
                         f"(character offset {exc.pos})") from None
    except RecursionError:
        raise BadRequest("malformed JSON body: nested too deeply") from None
    except ValueError as exc:  # NaN, or an integer of more than 4300 digits
        raise BadRequest(f"malformed JSON body: {exc}") from None


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JSONBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_parsed_json"):
            self._parsed_json = parse_json(await self.body())
        return self._parsed_json


class CheckedRoute(APIRoute):
    """A route whose JSON body is parsed here, before FastAPI's own handling: strict UTF-8 JSON with positions
    in the errors, then ``app.limits.BODY_LIMITS`` checked on the parsed value, before pydantic validates it."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        path = self.path

        async def checked(request: Request) -> Response:
            request = JSONBodyRequest(request.scope, request.receive)
            if await request.body():
                content_type = request.headers.get("content-type")
                if not _is_json(content_type):
                    raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: application/json' "
                                               f"(got {content_type or 'no Content-Type'!r:.80})")
                check_body(path, await request.json(), request.app.state.service.settings)
            return await handler(request)

        return checked


def allowed_methods(app: FastAPI, path: str) -> str:
    """The ``Allow`` header for ``path``: every method some route answers there, and OPTIONS ("" if none)."""
    routes = [route for route in app.router.routes if not isinstance(route, Mount)]
    methods = {"GET", "HEAD"} if any(isinstance(route, Mount) and path.startswith(route.path + "/")
                                     for route in app.router.routes) else set()  # static files
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {"type": "http", "path": path, "method": method, "root_path": "", "app": app, "headers": []}
        if any(route.matches(dict(probe))[0] == Match.FULL for route in routes):
            methods.add(method)
    return ", ".join(sorted(methods | {"OPTIONS"})) if methods else ""


class Options:
    """``OPTIONS <path>``: 204 with ``Allow`` for a path the service serves; other paths go on (404)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            allow = allowed_methods(scope["app"], scope["path"])
            if allow:
                return await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
        return await self.app(scope, receive, send)
