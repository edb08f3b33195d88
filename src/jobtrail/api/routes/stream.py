"""A job's log live (Server-Sent Events, see ``jobtrail.api.sse``) and as one download."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from jobtrail.api.deps import Service
from jobtrail.api.routes.logs import Fields
from jobtrail.api.schemas import ErrorOut, Level, LevelName, LogFormat
from jobtrail.api.sse import PAGE, RecordFilter, follow, start_cursor
from jobtrail.errors import InvalidQuery
from jobtrail.logstore import FieldMatch, Record
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
    since: Annotated[
        str | None, Query(max_length=64, description="Only records at or after this ISO time")
    ] = None,
    host: Annotated[str | None, Query(max_length=256)] = None,
    task: Annotated[str | None, Query(max_length=1024)] = None,
    event: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=1000, description="Only records holding it (as /search)"),
    ] = None,
    regex: Annotated[bool, Query(description="q is an RE2 regex (as /search)")] = False,
    ignore_case: Annotated[bool, Query(description="q matches letters in either case")] = False,
    fields: Fields = None,
) -> StreamingResponse:
    """The whole log as it is now, oldest first: text lines, or the JSONL records; only the
    records every filter given lets through (``q`` as ``/logs/search`` finds them)."""
    service.check_logs(job_id)
    keys = {k: v for k, v in (("host", host), ("task", task), ("event", event)) if v is not None}
    pages = first = None
    if q is not None or since or keys or fields or level is not Level.DEBUG or not format.records:
        pages = _pager(service, job_id, level, since, keys or None, fields, q, regex, ignore_case)
        try:
            first = pages(0)  # here, so a bad regex or time is a 422 before anything is sent
        except ValueError as exc:
            raise InvalidQuery(str(exc)) from None
    suffix = "jsonl" if format.records else "log"
    return StreamingResponse(
        _download(service, job_id, format.records, pages, first),
        media_type="application/x-ndjson" if format.records else "text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{suffix}"'},
    )


# records oldest first, their lines as served (``logstore.raw``), truncated_before, more
Page = tuple[list[Record], list[bytes], int, bool]


def _pager(
    service: JobService,
    job_id: str,
    level: Level,
    since: str | None,
    match: dict[str, str] | None,
    fields: FieldMatch | None,
    q: str | None,
    regex: bool,
    ignore_case: bool,
) -> Callable[[int], Page]:
    """The filtered log's page after a seq: a read, or with ``q`` a search (not counting)."""

    def read(after: int) -> Page:
        page = service.read(
            job_id, tail=PAGE, after=after, min_level=level.value, since=since, match=match,
            fields=fields,
        )  # fmt: skip
        return page.records, page.lines, page.truncated_before, page.more

    def search(after: int) -> Page:
        assert q is not None
        found = service.search(
            job_id, q, regex=regex, ignore_case=ignore_case, context=0, max_matches=PAGE,
            min_level=level.value, after=after, since=since, match=match, fields=fields,
            count_all=False,
        )  # fmt: skip
        matches = found.matches
        return (
            [m.record for m in matches],
            [m.line for m in matches],
            found.truncated_before,
            found.more,
        )

    return read if q is None else search


async def _download(
    service: JobService,
    job_id: str,
    jsonl: bool,
    pages: Callable[[int], Page] | None,
    page: Page | None,
) -> AsyncIterator[bytes]:
    """The log page by page, each page read in a thread; as JSONL the stored lines, which
    are the records' JSON already (filtered or not), never encoded again."""
    cursor = 0
    while pages is None:
        raw = await asyncio.to_thread(service.read_lines, job_id, after=cursor, limit=PAGE)
        if raw.lines:
            yield b"\n".join(raw.lines) + b"\n"
            cursor = raw.seqs[-1]
        if not raw.more:
            return
    while page is not None:
        records, lines, truncated_before, more = page
        if jsonl:
            if lines:
                yield b"\n".join(lines) + b"\n"
        else:
            if cursor == 0 and truncated_before > 1:
                yield f"[records 1-{truncated_before - 1} were removed by rotation]\n".encode()
            if records:
                yield ("\n".join(text_line(r) for r in records) + "\n").encode()
        if records:
            cursor = int(records[-1]["seq"])
        page = await asyncio.to_thread(pages, cursor) if more else None
