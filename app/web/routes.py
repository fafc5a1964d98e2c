"""``GET /ui`` (the page) and ``/ui/static/*`` (its assets), under a strict Content-Security-Policy.

``GET /`` stays the JSON service description for API clients; a browser (an Accept header that prefers
text/html) is redirected to ``/ui``. Nothing here appears in the OpenAPI schema."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


def prefers_html(accept: str) -> bool:
    """True when text/html is listed before (or instead of) any JSON type, with q > 0."""
    ranked = []
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        ranked.append((-q, position, media.lower()))
    for _, _, media in sorted(r for r in ranked if r[0] < 0):
        if media in ("text/html", "application/xhtml+xml"):
            return True
        if media in ("application/json", "*/*", "application/*"):
            return False
    return False


class WebMiddleware:
    """Browsers asking for ``/`` go to ``/ui``; every ``/ui`` response carries the CSP headers."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            if prefers_html(accept):
                await send({"type": "http.response.start", "status": 307,
                            "headers": [(b"location", b"/ui"), (b"content-length", b"0"), (b"vary", b"Accept")]})
                return await send({"type": "http.response.body", "body": b""})
        if path != "/ui" and not path.startswith("/ui/"):
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items() if k.lower().encode() not in names]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_middleware(WebMiddleware)
