"""A job's log live (Server-Sent Events, see ``jobtrail.api.sse``) and as one download."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from jobtrail.api.deps import Service
from jobtrail.api.routes.logs import Fields
from jobtrail.api.schemas import ErrorOut, Level, LevelName, LogFormat
from jobtrail.api.sse import PAGE, RecordFilter, dumps, follow, start_cursor
from jobtrail.logstore import FieldMatch
from jobtrail.records import text_line
from jobtrail.service import JobService

router = APIRouter(prefix="/api", tags=["logs"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get(
    "/jobs/{job_id}/logs/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        404: {"model": ErrorOut},
        410: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
def stream_logs(
    job_id: str,
    request: Request,
    service: Service,
    level: Annotated[LevelName, Query()] = Level.DEBUG,
    after: Annotated[
        int | None, Query(ge=0, description="Start after this seq (Last-Event-ID wins)")
    ] = None,
    tail: Annotated[
        int | None,
        Query(ge=1, le=10000, description="Without after/Last-Event-ID: start with the newest N"),
    ] = None,
    host: Annotated[str | None, Query(max_length=256)] = None,
    task: Annotated[str | None, Query(max_length=1024)] = None,
    event: Annotated[str | None, Query(max_length=64)] = None,
    fields: Fields = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Follow the job's log as Server-Sent Events until it ends (a finished job: replay)."""
    # a def route (FastAPI's threadpool): the checks and the start read may block
    job = service.check_logs(job_id)  # 404 / 410 before anything is streamed
    keys = (("host", host), ("task", task), ("event", event))
    query = RecordFilter(level.value, tuple((k, v) for k, v in keys if v is not None), fields)
    cursor = start_cursor(service, job_id, last_event_id, after, tail, query)
    return StreamingResponse(
        follow(request, service, job, cursor, query),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.get(
    "/jobs/{job_id}/logs/download",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/plain": {}, "application/x-ndjson": {}}},
        404: {"model": ErrorOut},
        410: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
def download_logs(
    job_id: str,
    service: Service,
    format: Annotated[
        LogFormat, Query(description="text lines, or one JSON record per line (jsonl or json)")
    ] = LogFormat.text,
    level: Annotated[LevelName, Query()] = Level.DEBUG,
    fields: Fields = None,
) -> StreamingResponse:
    """The whole log as it is now, oldest first: text lines, or the JSONL records."""
    service.check_logs(job_id)
    suffix = "jsonl" if format.records else "log"
    return StreamingResponse(
        _download(service, job_id, format.records, level, fields),
        media_type="application/x-ndjson" if format.records else "text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{suffix}"'},
    )


async def _download(
    service: JobService, job_id: str, jsonl: bool, level: Level, fields: FieldMatch | None
) -> AsyncIterator[bytes]:
    """The log page by page, each page read in a thread."""
    cursor = 0
    while True:
        if jsonl and level is Level.DEBUG and fields is None:  # the stored lines are the JSON
            raw = await asyncio.to_thread(service.read_lines, job_id, after=cursor, limit=PAGE)
            if raw.lines:
                yield b"\n".join(raw.lines) + b"\n"
                cursor = raw.seqs[-1]
            if not raw.more:
                return
            continue
        page = await asyncio.to_thread(
            service.read, job_id, tail=PAGE, after=cursor, min_level=level.value, fields=fields
        )
        if jsonl:
            if page.records:
                yield "".join(dumps(r) + "\n" for r in page.records).encode()
        else:
            if cursor == 0 and page.truncated_before > 1:
                first = page.truncated_before - 1
                yield f"[records 1-{first} were removed by rotation]\n".encode()
            if page.records:
                yield ("\n".join(text_line(r) for r in page.records) + "\n").encode()
        if page.records:
            cursor = int(page.records[-1]["seq"])
        if not page.more:
            return
