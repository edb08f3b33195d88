"""The web page: one static HTML page with its script and style, no build step, no CDN.

The page only ever talks to the JSON API and the log stream; it holds no job data itself,
so it is served to anyone who reaches the server (the API behind it still wants the token).
A strict Content-Security-Policy keeps any script but its own from running, a second line
behind the page's rule of showing job data only through ``textContent``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return resources.files("jobtrail").joinpath("web", name).read_bytes()


def _file(name: str) -> Response:
    return Response(_read(name), media_type=_FILES[name], headers=HEADERS)


@router.get("/")
async def index() -> Response:
    return _file("index.html")


@router.get("/web/app.js")
async def script() -> Response:
    return _file("app.js")


@router.get("/web/app.css")
async def style() -> Response:
    return _file("app.css")
