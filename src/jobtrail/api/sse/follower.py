"""One follower: the event stream of one connection, from its cursor to the job's end.

::

    finished job ──► replay from the files ─────────────────────────────► end
    running job  ──► join the hub ─┬─► behind the window: catch up from the files
                                   ├─► in the window: send its blocks from the cursor on
                                   ├─► status changed: ``status``; nothing for 15 s: ping
                                   ├─► the hub read the job's end: ``end``
                                   └─► the server is stopping: ``shutdown``

A follower only ever blocks in its own ``send`` (uvicorn's flow control), and what it has
not sent yet stays on disk, not in a queue, so a slow client slows no one else. Records that
rotation removed before it read them become one ``gap`` event, never a silent hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import Request

from jobtrail.api.sse import hub as hubs
from jobtrail.api.sse.frames import (
    RecordFilter,
    blocks_after,
    end_data,
    event,
    gap,
    line_frame,
    shutdown_data,
    status_data,
)
from jobtrail.errors import InvalidQuery
from jobtrail.models import Job
from jobtrail.service import JobService

PING_SECONDS = 15.0  # keep-alive comment when nothing else was sent
FOLLOWER_PAGE = 1000  # records per store read of a follower catching up (bounds its memory)
CHUNK_BYTES = 256 * 1024  # a follower yields at most about this much at once
RETRY_MS = 1000  # the reconnect delay an EventSource should use


def start_cursor(
    service: JobService,
    job_id: str,
    last_event_id: str | None,
    after: int | None,
    tail: int | None,
    query: RecordFilter,
) -> int:
    """Where a stream starts: Last-Event-ID, else ``after``, else the newest ``tail``, else 0.
    May read the log: call it off the event loop."""
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise InvalidQuery(
                f"Last-Event-ID must be a record seq (an integer); got {last_event_id!r}"
            ) from None
        if value < 0:
            raise InvalidQuery(f"Last-Event-ID must not be negative; got {value}")
        return value
    if after is not None:
        return after
    if tail is not None:
        page = service.read(
            job_id,
            tail=tail,
            min_level=query.level,
            match=dict(query.match) or None,
            fields=query.fields,
        )
        if page.records:
            return int(page.records[0]["seq"]) - 1
    return 0


async def from_files(
    service: JobService, job_id: str, cursor: int, bound: int | None, query: RecordFilter
) -> AsyncGenerator[tuple[int, bytes], None]:
    """Matching records after ``cursor`` from the files, in pages; (new cursor, bytes).

    ``bound``: a seq every record up to which the files already held before the first read,
    so an empty filtered page can still move the cursor that far."""
    match = dict(query.match) or None
    while True:
        if not query.filtered:
            blocks, lines = await asyncio.to_thread(
                hubs.read_blocks, service, job_id, cursor, FOLLOWER_PAGE
            )
            more, latest, truncated = lines.more, lines.latest_seq, lines.truncated_before
            out = [block.data for block in blocks]  # gap notices included
            first = blocks[0].first if blocks else latest + 1
            last = blocks[-1].last if blocks else None
        else:
            page = await asyncio.to_thread(
                service.read,
                job_id,
                tail=FOLLOWER_PAGE,
                min_level=query.level,
                after=cursor,
                match=match,
                fields=query.fields,
            )
            more, latest, truncated = page.more, page.latest_seq, page.truncated_before
            out = [
                line_frame(r["seq"], line) for r, line in zip(page.records, page.lines, strict=True)
            ]
            first = page.first_seq if page.first_seq is not None else latest + 1
            last = page.last_seq if page.records else None
        if truncated > cursor + 1 and first > cursor + 1 and (query.filtered or not out):
            lost_to = min(truncated - 1, first - 1)
            out.insert(0, gap(cursor + 1, lost_to, "rotated away").data)
            cursor = lost_to
        if last is not None:
            cursor = last
        if not more and bound is not None:
            cursor = max(cursor, bound)
        yield cursor, b"".join(out)
        if not more:
            return


def _from_window(hub: hubs.Hub, cursor: int, query: RecordFilter) -> tuple[int, bytes, bool]:
    """The window's frames after ``cursor``, up to about ``CHUNK_BYTES``: (new cursor, bytes,
    whether more is waiting). No await inside: the window only changes between awaits."""
    parts: list[bytes] = []
    size = 0
    for block in blocks_after(hub.blocks, cursor):
        part = block.matching_after(cursor, query) if query.filtered else block.frames_after(cursor)
        cursor = block.last
        if part:
            parts.append(part)
            size += len(part)
            if size >= CHUNK_BYTES:
                break
    return cursor, parts[0] if len(parts) == 1 else b"".join(parts), size >= CHUNK_BYTES


async def follow(
    request: Request, service: JobService, job: Job, cursor: int, query: RecordFilter
) -> AsyncIterator[bytes]:
    """The event stream of one follower, from ``cursor`` (exclusive) to the job's end."""
    job_id = job.job_id
    yield f"retry: {RETRY_MS}\n\n".encode()
    last_status = status_data(job)
    yield event("status", last_status)

    if job.status.terminal:  # a finished job: replay what is on disk, then end
        async with contextlib.aclosing(from_files(service, job_id, cursor, None, query)) as pages:
            async for _, chunk in pages:
                if chunk:
                    yield chunk
        yield event("end", end_data(job))
        return

    stopping = hubs.stopping(request.app)
    hub = await hubs.join(request.app, service, job_id)
    try:
        last_sent = time.monotonic()
        while True:
            if stopping.is_set():
                yield event("shutdown", shutdown_data(hub.job or job))
                return
            changed = hub.changed
            sent = False
            if cursor < hub.start:  # behind the window: catch up from the files
                pages = from_files(service, job_id, cursor, hub.start, query)
                async with contextlib.aclosing(pages):
                    async for moved, chunk in pages:
                        cursor = moved
                        if chunk:
                            sent = True
                            yield chunk
                        if cursor >= hub.start or stopping.is_set():  # the window has the rest
                            break
            else:
                cursor, chunk, full = _from_window(hub, cursor, query)
                if chunk:
                    sent = True
                    yield chunk
                if full:
                    last_sent = time.monotonic()
                    continue  # more is waiting: no need to sleep
            if hub.job is not None:
                status = status_data(hub.job)
                if status != last_status:
                    last_status = status
                    sent = True
                    yield event("status", status)
            if hub.done and cursor >= hub.cursor:
                final = hub.job  # set before done, so this is only for the type checker
                if final is None:
                    final = await asyncio.to_thread(service.get, job_id)
                yield event("end", end_data(final))
                return
            if (hub.task is None or hub.task.done()) and not hub.done and not stopping.is_set():
                # the hub stopped (it failed or was cancelled): continue on a fresh one
                hubs.leave(hub)
                hub = await hubs.join(request.app, service, job_id)
                continue
            now = time.monotonic()
            if sent:
                last_sent = now
            elif now - last_sent >= PING_SECONDS:
                last_sent = now
                yield b": ping\n\n"
            if await request.is_disconnected():
                return
            if stopping.is_set():
                continue  # the top of the loop says goodbye
            if changed is hub.changed and not (hub.done and cursor < hub.cursor):
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), PING_SECONDS)
    finally:
        hubs.leave(hub)
