"""Routes reach the server through this, never through module globals; tests override it."""

from __future__ import annotations

from fastapi import Request

from jobtrail.server import JobServer


def get_server(request: Request) -> JobServer:
    server: JobServer = request.app.state.server
    return server
