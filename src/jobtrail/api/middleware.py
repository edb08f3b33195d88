"""ASGI middleware every request passes before routing: the body size limit and the token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from jobtrail.api.routes.pages import DOCS_ASSETS

MAX_BODY_BYTES = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """413 for a body over the limit, checked on Content-Length and while it streams in."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body is larger than {self.limit} bytes; send less"},
            status_code=413,
        )
        await response({"type": "http"}, _no_body, send)


class BearerAuth:
    """With a token set, every request but /api/health needs ``Authorization: Bearer <token>``
    (or the ``jobtrail_token`` cookie the web page sets); compared in constant time. Paths
    in ``public`` (``/metrics`` with ``--metrics-public``) need none either."""

    # the page itself holds no job data: it must load to show its token prompt
    OPEN_PATHS = frozenset({"/api/health", "/", "/web/app.js", "/web/app.css", *DOCS_ASSETS})

    def __init__(self, app: ASGIApp, token: str, public: tuple[str, ...] = ()) -> None:
        self.app = app
        self.open_paths = self.OPEN_PATHS | frozenset(public)
        self.expected = f"Bearer {token}".encode()
        self.cookie = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"detail": "missing or wrong token: send the header 'Authorization: Bearer <token>'"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and hmac.compare_digest(value, self.expected):
                return True
            if name == b"cookie":
                for part in value.split(b";"):
                    key, _, token = part.strip().partition(b"=")
                    if key == b"jobtrail_token" and hmac.compare_digest(token, self.cookie):
                        return True
        return False


class _TooLarge(Exception):
    """Raised inside the app's ``receive`` once the body passed the limit; becomes the 413."""


async def _no_body() -> Message:
    return {"type": "http.request", "body": b""}
