"""The FastAPI application: lifespan owns the JobServer, one handler maps errors to HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from jobtrail.api import jobs, logs, pages, stream
from jobtrail.api.checks import reject_unknown_query
from jobtrail.errors import (
    InvalidParams,
    InvalidQuery,
    JobFinished,
    JobNotFound,
    JobtrailError,
    LogsExpired,
    QueueFull,
    UnknownJobType,
    UnsupportedMediaType,
)
from jobtrail.service.service import JobServer, ServerConfig, open_server

log = logging.getLogger("jobtrail.api")

MAX_BODY_BYTES = 1024 * 1024
RETENTION_EVERY_SECONDS = 3600.0

_STATUS: dict[type[JobtrailError], int] = {
    JobNotFound: 404,
    UnknownJobType: 422,
    InvalidParams: 422,
    InvalidQuery: 422,
    JobFinished: 409,
    LogsExpired: 410,
    QueueFull: 503,
    UnsupportedMediaType: 415,
}

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
    (or the ``jobtrail_token`` cookie the web page sets); compared in constant time."""

    # the page itself holds no job data: it must load to show its token prompt
    OPEN_PATHS = frozenset({"/api/health", "/", "/web/app.js", "/web/app.css", *pages.DOCS_ASSETS})

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.cookie = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS or self._allowed(scope):
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
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b""}


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path")]
    where = ".".join(loc) if loc != ["body"] else "body"
    if err.get("type") == "missing":
        return f"{where}: required"
    if err.get("type") in ("model_attributes_type", "dict_type") and loc == ["body"]:
        return 'body: must be a JSON object such as {"type": "sleep", "params": {}}'
    if err.get("type") == "json_invalid":
        return "body: is not valid JSON"
    return f"{where}: {err.get('msg')} (got {err.get('input')!r})"


def create_app(
    config: ServerConfig | None = None, server: JobServer | None = None, start_server: bool = False
) -> FastAPI:
    """The app for ``config`` (a server is made and started in lifespan) or a given server,
    which lifespan also starts and stops with ``start_server`` (the CLI opens it first, so
    a home in use is an error before uvicorn runs)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = server is None or start_server
        job_server = server or open_server(config or ServerConfig())
        if owned:
            await asyncio.to_thread(job_server.start)
        app.state.server = job_server
        retention = asyncio.create_task(_retention_loop(job_server))
        try:
            yield
        finally:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
            if owned:
                await asyncio.to_thread(job_server.stop)

    app = FastAPI(
        title="jobtrail",
        summary="Run jobs in a process pool and watch their logs as closely as from a terminal.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],  # every route: 422 for an unknown one
        docs_url=None,  # pages.py serves /docs with Swagger UI's files from the package
        redoc_url=None,
    )
    app.include_router(jobs.router)
    app.include_router(logs.router)
    app.include_router(stream.router)
    app.include_router(pages.router)

    @app.exception_handler(JobtrailError)
    async def jobtrail_error(request: Request, exc: JobtrailError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_STATUS.get(type(exc), 400))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_describe(err) for err in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    app.add_middleware(BodySizeLimit)
    token = (server.config if server else config or ServerConfig()).token
    if token:
        app.add_middleware(BearerAuth, token=token)
    return app


async def _retention_loop(server: JobServer) -> None:
    while True:
        try:
            expired = await asyncio.to_thread(server.expire_logs)
            if expired:
                log.info("retention: deleted the logs of %d job(s)", len(expired))
        except Exception:  # keep the loop alive: the next hour may succeed
            log.exception("retention run failed")
        await asyncio.sleep(RETENTION_EVERY_SECONDS)
