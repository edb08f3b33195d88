"""Routes reach the server through this, never through module globals; tests override it."""

from __future__ import annotations

from fastapi import Request

from jobtrail.service.service import JobServer


async def get_server(request: Request) -> JobServer:
    """Async so FastAPI calls it on the event loop instead of a threadpool hop per request."""
    server: JobServer = request.app.state.server
    return server
