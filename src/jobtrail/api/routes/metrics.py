"""``GET /metrics``: Prometheus's text format (behind the token unless ``--metrics-public``).

The streams are counted on the event loop (the hubs live there); the rest is read and
rendered in a worker thread, since the job records are SQLite or Redis.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from jobtrail.api.sse.hub import open_hubs

router = APIRouter()

PATH = "/metrics"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MISSING = "metrics need prometheus-client: pip install 'jobtrail[metrics]'"


@router.get(PATH, include_in_schema=False)
async def metrics(request: Request) -> Response:
    try:
        from jobtrail.api.metrics import MetricsPage, Streams
    except ImportError:
        return JSONResponse({"detail": MISSING}, status_code=501)

    page: MetricsPage | None = getattr(request.app.state, "metrics_page", None)
    if page is None:  # on the loop, so two first scrapes share one fold
        page = request.app.state.metrics_page = MetricsPage(request.app.state.job_metrics)
    hubs = open_hubs(request.app)
    streams = Streams(open=len(hubs), followers=sum(hub.followers for hub in hubs))
    body = await asyncio.to_thread(page.render, streams)
    return Response(body, media_type=CONTENT_TYPE)
