"""The FastAPI application, and the HTTP server that runs it.

::

    request ─► BearerAuth ─► BodySizeLimit ─► router ─► deps (service, checks) ─► route
                                                              errors.py: JobtrailError → status

The app's lifespan owns the service: it opens and starts it (each in a thread: both touch
the disk), puts it in ``app.state`` for ``deps.get_service``, runs retention hourly, and
stops it after the app stops serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import Depends, FastAPI
from starlette.routing import Route

from jobtrail.api.deps import reject_unknown_query
from jobtrail.api.errors import add_error_handlers
from jobtrail.api.middleware import BearerAuth, BodySizeLimit
from jobtrail.api.routes import jobs, logs, metrics, pages, stream
from jobtrail.api.routes import search as search_routes
from jobtrail.api.routes import summary as summary_routes
from jobtrail.api.routes.ansible import router as ansible_router
from jobtrail.api.sse import stop_streams
from jobtrail.backends import open_service
from jobtrail.mcp import PATH as MCP_PATH
from jobtrail.mcp import McpEndpoint
from jobtrail.service import JobService, ServerConfig
from jobtrail.service.metrics import JobMetrics

log = logging.getLogger("jobtrail.api")

RETENTION_EVERY_SECONDS = 3600.0


def create_app(
    config: ServerConfig | None = None,
    server: JobService | None = None,
    start_server: bool = False,
    metrics_public: bool = False,
) -> FastAPI:
    """The app for ``config`` (a service is opened and started in lifespan) or a given
    service, which lifespan also starts and stops with ``start_server`` (the CLI opens it
    first, so a home in use is an error before uvicorn runs). ``metrics_public``: /metrics
    answers without the token (for a Prometheus that cannot send one)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = server is None or start_server
        service = server
        if service is None:  # it reads the home and imports the job modules: off the loop
            service = await asyncio.to_thread(open_service, config or ServerConfig())
        if owned:
            await asyncio.to_thread(service.start)
        app.state.service = service
        app.state.job_metrics = JobMetrics(service)  # /metrics counts the jobs ended from now
        retention = asyncio.create_task(_retention_loop(service))
        try:
            async with mcp.serving(app):  # /mcp's tools call this app, in-process
                yield
        finally:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
            await service.close_on_loop()  # whoever owns the service: this loop ends
            if owned:
                await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="jobtrail",
        summary="Run jobs in a process pool and watch their logs as closely as from a terminal.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],  # every route: 422 for an unknown one
        docs_url=None,  # routes/pages.py serves /docs with Swagger UI's files from the package
        redoc_url=None,
    )
    app.include_router(jobs.router)
    app.include_router(logs.router)
    app.include_router(stream.router)
    app.include_router(search_routes.router)
    app.include_router(summary_routes.router)
    app.include_router(ansible_router)
    app.include_router(pages.router)
    app.include_router(metrics.router)
    add_error_handlers(app)
    app.add_middleware(BodySizeLimit)
    token = (server.config if server else config or ServerConfig()).token
    if token:
        app.add_middleware(BearerAuth, token=token, public=(metrics.PATH,) * metrics_public)
    mcp = McpEndpoint(token)
    app.router.routes.append(Route(MCP_PATH, mcp))  # MCP over streamable HTTP, behind the token
    return app


async def _retention_loop(service: JobService) -> None:
    while True:
        try:
            expired = await asyncio.to_thread(service.expire_logs)
            if expired:
                log.info("retention: deleted the logs of %d job(s)", len(expired))
        except Exception:  # keep the loop alive: the next hour may succeed
            log.exception("retention run failed")
        await asyncio.sleep(RETENTION_EVERY_SECONDS)


class ApiServer(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown ends the app's log streams before it waits.

    uvicorn stops in this order: stop accepting, ask open connections to finish, wait for
    them (``timeout_graceful_shutdown``), cancel what is left, then the app's lifespan
    shutdown. A log stream never finishes by itself while its job runs, so each one would
    hold a SIGTERM for the whole timeout and then be cancelled with a traceback. Here the
    streams are told first (``stop_streams``): each sends its ``shutdown`` event and closes,
    and the wait that follows is over in milliseconds.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, FastAPI):
            stop_streams(self.config.app)
        await super().shutdown(sockets)
