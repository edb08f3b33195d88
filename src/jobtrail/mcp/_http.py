"""/mcp on the API server: MCP over streamable HTTP, behind the API's own token.

The tools are the ones ``jobtrail mcp`` serves over stdio, over the same ``AsyncClient``:
here it talks to the app it is mounted in, in-process (httpx's ASGI transport, no socket),
so a tool call passes the same routes, checks and token as a REST call would, and the
tools need no second way to reach the service. The request to /mcp itself passes the app's
``BearerAuth`` first: 401 without the token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from jobtrail.client import AsyncClient

PATH = "/mcp"
IN_PROCESS_URL = "http://jobtrail.in-process"  # the app is reached without a socket
MISSING_SDK = (
    "this jobtrail server has no MCP support: install it with the extra, "
    "pip install 'jobtrail[mcp]', and restart it"
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def in_process_client(app: ASGIApp, token: str | None) -> AsyncClient:
    """An ``AsyncClient`` whose requests go straight into ``app``."""
    client = AsyncClient(IN_PROCESS_URL, token=token)
    # AsyncClient takes no transport yet: give it one over the app (same URL and headers)
    old = client._http
    client._http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url=IN_PROCESS_URL,
        headers=old.headers,
        timeout=old.timeout,
    )
    return client


class McpEndpoint:
    """The ASGI app at /mcp; ``serving(app)`` runs it for the life of the API's app."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._handle: ASGIApp | None = None

    @contextlib.asynccontextmanager
    async def serving(self, app: ASGIApp) -> AsyncIterator[None]:
        try:
            from jobtrail.mcp._server import build_server
        except ImportError:  # the SDK is an extra: /mcp then says how to get it
            yield
            return
        async with in_process_client(app, self.token) as client:
            server = build_server(client)
            # no DNS-rebinding host list (it would refuse every other name the server has):
            # the token guards /mcp as it guards the REST API
            server.streamable_http_app(host="0.0.0.0")
            manager = server.session_manager
            async with manager.run():
                self._handle = manager.handle_request
                try:
                    yield
                finally:
                    self._handle = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handle = self._handle
        if handle is not None:
            await handle(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        status = 501 if scope["type"] == "http" and self._sdk_missing() else 503
        detail = MISSING_SDK if status == 501 else "the MCP endpoint is not running yet"
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)

    @staticmethod
    def _sdk_missing() -> bool:
        import importlib.util

        return importlib.util.find_spec("mcp") is None
