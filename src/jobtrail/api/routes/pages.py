"""The web page: one static HTML page with its script and style, no build step, no CDN.

The page only ever talks to the JSON API and the log stream; it holds no job data itself,
so it is served to anyone who reaches the server (the API behind it still wants the token).
A strict Content-Security-Policy keeps any script but its own from running, a second line
behind the page's rule of showing job data only through ``textContent``.

``/docs`` is FastAPI's Swagger UI page with its files served from here too, so it works with
no internet: they come from the ``fastapi-offline`` package, which ships Swagger UI's release
files for this purpose (FastAPI's own default loads them from a CDN). The page's one inline
script, FastAPI's call that starts Swagger UI, is allowed by its hash, so the same strict
policy holds there. ``/docs`` and ``/openapi.json`` stay behind the token: Swagger UI's
requests carry the cookie the web page sets, as the page's own requests do.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)
# plain def routes: the first request for a file reads it from the package (then cached), and
# file reads stay off the event loop

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_DOCS_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
DOCS_ASSETS = frozenset(f"/web/docs/{name}" for name in _DOCS_FILES)
"""Swagger UI's files: no data in them, so they load before a token is given."""


def _csp(script_src: str) -> str:
    return (
        f"default-src 'self'; script-src {script_src}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )


CSP = _csp("'self'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


@cache
def _read(name: str) -> bytes:
    return resources.files("jobtrail").joinpath("web", name).read_bytes()


@cache
def _read_docs(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def _file(name: str) -> Response:
    return Response(_read(name), media_type=_FILES[name], headers=HEADERS)


@router.get("/")
def index() -> Response:
    return _file("index.html")


@router.get("/web/app.js")
def script() -> Response:
    return _file("app.js")


@router.get("/web/app.css")
def style() -> Response:
    return _file("app.css")


@cache
def _docs_page(openapi_url: str, title: str) -> tuple[bytes, str]:
    """The Swagger UI page and a policy that lets its inline start-up script run, no other."""
    html = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - API docs",
        swagger_js_url="/web/docs/swagger-ui-bundle.js",
        swagger_css_url="/web/docs/swagger-ui.css",
        swagger_favicon_url="/web/docs/favicon.png",
        oauth2_redirect_url=None,
    ).body
    digests = (hashlib.sha256(body).digest() for body in _INLINE_SCRIPT.findall(bytes(html)))
    hashes = " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)
    return bytes(html), _csp(f"'self' {hashes}")


@router.get("/docs")
def docs(request: Request) -> Response:
    html, csp = _docs_page(request.app.openapi_url, request.app.title)
    return Response(
        html, media_type=_FILES["index.html"], headers={**HEADERS, "Content-Security-Policy": csp}
    )


@router.get("/web/docs/{name}")
def docs_asset(name: str) -> Response:
    if name not in _DOCS_FILES:
        return Response(status_code=404)
    return Response(_read_docs(name), media_type=_DOCS_FILES[name], headers=HEADERS)
