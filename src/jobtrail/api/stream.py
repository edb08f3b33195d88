"""Live follow: a job's log as Server-Sent Events, and the whole log as one download.

::

    LogListener ─► JobLogStore files ─► _Hub (one per followed running job, one asyncio task)
                                         polls store.read(after=cursor) every 50 ms,
                                         keeps the newest records pre-encoded (bounded)
                                              │ wakes
                                              ▼
                        follower generators (one per connection, no thread each)
                        read from the hub's window, or catch up from the files with
                        cursor reads when they fell behind it

A follower never slows the listener, the hub or another follower: it only ever blocks in
its own ``send`` (uvicorn's flow control), and what it has not read yet stays on disk, not
in a queue. If rotation removed records before a follower read them, it gets an
``event: gap`` naming the lost seq range instead of a silent hole.

Events: ``record`` (``id: <seq>``, ``data: <record JSON>``), ``status`` (status, progress,
current_step), ``gap`` (``{"from": a, "to": b}``, ``id: b``), ``end`` (terminal status,
error, failure; then the stream closes). ``: ping`` comments every 15 s keep proxies and
clients from timing out. A reconnect with ``Last-Event-ID`` (or ``after=``) resumes with no
gap and no repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from jobtrail.api.deps import get_server
from jobtrail.api.schemas import ErrorOut, Level
from jobtrail.capture.records import LEVELS, text_line
from jobtrail.capture.store import LogPage
from jobtrail.errors import InvalidQuery
from jobtrail.models import Job
from jobtrail.server import JobServer

log = logging.getLogger("jobtrail.api.stream")
router = APIRouter(prefix="/api", tags=["logs"])
Server = Annotated[JobServer, Depends(get_server)]

POLL_SECONDS = 0.05  # how often a hub looks for new records and status changes
PING_SECONDS = 15.0  # keep-alive comment when nothing else was sent
PAGE = 2000  # records per store read of a hub or a download
FOLLOWER_PAGE = 500  # records per store read of a follower catching up (bounds its memory)
CHUNK_BYTES = 256 * 1024  # a follower yields at most about this much at once
HUB_RECORDS = 10_000  # a hub's window: at most this many records ...
HUB_BYTES = 8 * 1024 * 1024  # ... and this many encoded bytes
HUB_LINGER = 5.0  # seconds a hub outlives its last follower (quick reconnects reuse it)
RETRY_MS = 1000  # the reconnect delay an EventSource should use
_RANK = {name: i for i, name in enumerate(LEVELS)}

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _event(name: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    # json.dumps never emits a raw newline, so one data line always carries the whole value
    return f"{head}data: {_dumps(data)}\n\n".encode()


def _record_frame(record: Mapping[str, Any]) -> bytes:
    return _event("record", record, int(record["seq"]))


def _status(job: Job) -> dict[str, Any]:
    return {
        "status": job.status.value,
        "progress": job.progress,
        "current_step": job.current_step,
    }


def _end(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "error": job.error,
        "failure": job.extra.get("failure") or None,
        "progress": job.progress,
    }


@dataclass(frozen=True)
class _Query:
    """What one follower asked for: a minimum level and exact Ansible field matches."""

    level: str = "DEBUG"
    match: tuple[tuple[str, str], ...] = ()

    @property
    def filtered(self) -> bool:
        return self.level != LEVELS[0] or bool(self.match)

    def accepts(self, record: Mapping[str, Any]) -> bool:
        if _RANK.get(str(record.get("level")), -1) < _RANK[self.level]:
            return False
        return all(str(record.get(k)) == v for k, v in self.match)


@dataclass
class _Entry:
    seq: int  # a record's seq; for a gap, the last seq lost
    frame: bytes
    record: dict[str, Any] | None  # None: a gap marker, which every follower is sent


@dataclass
class _Hub:
    """The newest records of one running job, read once for all of its followers."""

    server: JobServer
    job_id: str
    cursor: int  # every record up to here has been read (or reported lost)
    start: int = 0  # the window holds every record after this seq up to ``cursor``
    entries: deque[_Entry] = field(default_factory=deque)
    size: int = 0
    job: Job | None = None
    done: bool = False  # the job is terminal and its whole log was read
    followers: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # cursor and task are set
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.start = self.cursor

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def _add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        self.size += len(entry.frame)
        while self.entries and (len(self.entries) > HUB_RECORDS or self.size > HUB_BYTES):
            old = self.entries.popleft()
            self.size -= len(old.frame)
            self.start = old.seq

    def _take(self, page: LogPage, frames: list[bytes]) -> None:
        for record, frame in zip(page.records, frames, strict=True):
            seq = int(record["seq"])
            if seq > self.cursor + 1:  # rotated away before the hub read them
                self._add(_Entry(seq - 1, _gap(self.cursor + 1, seq - 1), None))
            self._add(_Entry(seq, frame, record))
            self.cursor = seq

    async def run(self, registry: dict[str, _Hub]) -> None:
        try:
            while True:
                if self.followers == 0 and time.monotonic() - self.idle_since > HUB_LINGER:
                    return
                job = self.server.get(self.job_id)  # before reading: see _follow
                while True:
                    page, frames = await asyncio.to_thread(
                        _read_framed, self.server, self.job_id, self.cursor
                    )
                    self._take(page, frames)
                    if not page.more:
                        break
                self.job = job
                if job.status.terminal:
                    self.done = True
                self._wake()
                if self.done:
                    return
                await asyncio.sleep(POLL_SECONDS)
        except Exception:  # a follower notices the hub stopped and starts a fresh one
            log.exception("stream hub of %s failed", self.job_id)
            await asyncio.sleep(POLL_SECONDS)
        finally:
            if registry.get(self.job_id) is self:
                del registry[self.job_id]
            self._wake()


def _read_framed(server: JobServer, job_id: str, after: int) -> tuple[LogPage, list[bytes]]:
    """One page for a hub, framed in the worker thread too: at thousands of records a
    second, serialising them on the event loop would delay every other request."""
    page = server.store.read(job_id, tail=PAGE, after=after)
    return page, [_record_frame(record) for record in page.records]


def _gap(first: int, last: int) -> bytes:
    return _event("gap", {"from": first, "to": last, "reason": "rotated away"}, last)


def _hubs(request: Request) -> dict[str, _Hub]:
    hubs: dict[str, _Hub] | None = getattr(request.app.state, "stream_hubs", None)
    if hubs is None:
        hubs = request.app.state.stream_hubs = {}
    return hubs


async def _join(request: Request, server: JobServer, job_id: str) -> _Hub:
    """The job's hub, started if there is none; the caller must ``_leave`` it."""
    hubs = _hubs(request)
    hub = hubs.get(job_id)
    if hub is None:  # registered before any await, so concurrent joiners share it
        hub = hubs[job_id] = _Hub(server, job_id, 0)
        hub.followers += 1
        try:
            latest = await asyncio.to_thread(server.store.read, job_id, tail=1)
        except BaseException:
            _leave(hub)
            del hubs[job_id]
            hub.ready.set()
            raise
        hub.cursor = hub.start = latest.latest_seq
        hub.task = asyncio.create_task(hub.run(hubs), name=f"stream-hub-{job_id}")
        hub.ready.set()
        return hub
    hub.followers += 1
    await hub.ready.wait()
    return hub


def _leave(hub: _Hub) -> None:
    hub.followers -= 1
    if hub.followers == 0:
        hub.idle_since = time.monotonic()


async def _follow(
    request: Request, server: JobServer, job: Job, cursor: int, query: _Query
) -> AsyncIterator[bytes]:
    """The event stream of one follower, from ``cursor`` (exclusive) to the job's end."""
    job_id = job.job_id
    match = dict(query.match) or None
    yield f"retry: {RETRY_MS}\n\n".encode()
    last_status = _status(job)
    yield _event("status", last_status)

    async def from_files(cursor: int, bound: int | None) -> AsyncGenerator[tuple[int, bytes], None]:
        """Matching records after ``cursor`` from the files, in pages; (new cursor, bytes).

        ``bound``: a seq every record up to which the files already held before the first
        read, so an empty filtered page can still move the cursor that far."""
        while True:
            page = await asyncio.to_thread(
                server.store.read,
                job_id,
                tail=FOLLOWER_PAGE,
                min_level=query.level,
                after=cursor,
                match=match,
            )
            out: list[bytes] = []
            first = page.first_seq if page.first_seq is not None else page.latest_seq + 1
            if page.truncated_before > cursor + 1 and first > cursor + 1:
                lost_to = min(page.truncated_before - 1, first - 1)
                out.append(_gap(cursor + 1, lost_to))
                cursor = lost_to
            out.extend(_record_frame(r) for r in page.records)
            if page.records:
                cursor = int(page.records[-1]["seq"])
            if not page.more and bound is not None:
                cursor = max(cursor, bound)
            yield cursor, b"".join(out)
            if not page.more:
                return

    if job.status.terminal:  # a finished job: replay what is on disk, then end
        async with contextlib.aclosing(from_files(cursor, None)) as pages:
            async for _, chunk in pages:
                if chunk:
                    yield chunk
        yield _event("end", _end(job))
        return

    hub = await _join(request, server, job_id)
    try:
        last_sent = time.monotonic()
        while True:
            changed = hub.changed
            sent = False
            if cursor < hub.start:  # behind the window: catch up from the files
                async with contextlib.aclosing(from_files(cursor, hub.start)) as pages:
                    async for moved, chunk in pages:
                        cursor = moved
                        if chunk:
                            sent = True
                            yield chunk
                        if cursor >= hub.start:  # the window covers the rest: no more decoding
                            break
            else:
                chunk_parts: list[bytes] = []
                size = 0
                # the window is only appended to between our awaits, so a scan is safe
                for entry in _after(hub.entries, cursor):
                    if entry.record is None or not query.filtered or query.accepts(entry.record):
                        chunk_parts.append(entry.frame)
                        size += len(entry.frame)
                    cursor = entry.seq
                    if size >= CHUNK_BYTES:
                        break
                if chunk_parts:
                    sent = True
                    yield b"".join(chunk_parts)
                if size >= CHUNK_BYTES:
                    last_sent = time.monotonic()
                    continue  # more is waiting: no need to sleep
            if hub.job is not None:
                status = _status(hub.job)
                if status != last_status:
                    last_status = status
                    sent = True
                    yield _event("status", status)
            if hub.done and cursor >= hub.cursor:
                final = hub.job or server.get(job_id)
                yield _event("end", _end(final))
                return
            if (hub.task is None or hub.task.done()) and not hub.done:
                # the hub stopped (it failed or was cancelled): continue on a fresh one
                _leave(hub)
                hub = await _join(request, server, job_id)
                continue
            now = time.monotonic()
            if sent:
                last_sent = now
            elif now - last_sent >= PING_SECONDS:
                last_sent = now
                yield b": ping\n\n"
            if await request.is_disconnected():
                return
            if changed is hub.changed and not (hub.done and cursor < hub.cursor):
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), PING_SECONDS)
    finally:
        _leave(hub)


def _after(entries: deque[_Entry], cursor: int) -> Iterator[_Entry]:
    """The entries with a seq above ``cursor`` (bisected: seqs in a window only grow)."""
    lo, hi = 0, len(entries)
    while lo < hi:
        mid = (lo + hi) // 2
        if entries[mid].seq <= cursor:
            lo = mid + 1
        else:
            hi = mid
    return islice(entries, lo, None)


def _start_cursor(
    server: JobServer,
    job_id: str,
    last_event_id: str | None,
    after: int | None,
    tail: int | None,
    query: _Query,
) -> int:
    """Where a stream starts: Last-Event-ID, else ``after``, else the newest ``tail``, else 0."""
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
        page = server.store.read(
            job_id, tail=tail, min_level=query.level, match=dict(query.match) or None
        )
        if page.records:
            return int(page.records[0]["seq"]) - 1
    return 0


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
async def stream_logs(
    job_id: str,
    request: Request,
    server: Server,
    level: Annotated[Level, Query(description="Minimum severity")] = Level.DEBUG,
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
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Follow the job's log as Server-Sent Events until it ends (a finished job: replay)."""
    job = server.check_logs(job_id)  # 404 / 410 before anything is streamed
    fields = (("host", host), ("task", task), ("event", event))
    query = _Query(level.value, tuple((k, v) for k, v in fields if v is not None))
    cursor = await asyncio.to_thread(
        _start_cursor, server, job_id, last_event_id, after, tail, query
    )
    return StreamingResponse(
        _follow(request, server, job, cursor, query),
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
    },
)
async def download_logs(
    job_id: str,
    server: Server,
    format: Annotated[str, Query(pattern="^(text|jsonl)$")] = "text",
) -> StreamingResponse:
    """The whole log as it is now, oldest first: text lines, or the JSONL records."""
    server.check_logs(job_id)
    jsonl = format == "jsonl"

    async def body() -> AsyncIterator[bytes]:
        cursor = 0
        while True:
            page = await asyncio.to_thread(server.store.read, job_id, tail=PAGE, after=cursor)
            if cursor == 0 and page.truncated_before > 1 and not jsonl:
                yield f"[records 1-{page.truncated_before - 1} were removed by rotation]\n".encode()
            if page.records:
                if jsonl:
                    lines = [_dumps(r) for r in page.records]
                else:
                    lines = [text_line(r) for r in page.records]
                yield ("\n".join(lines) + "\n").encode()
                cursor = int(page.records[-1]["seq"])
            if not page.more:
                return

    suffix = "jsonl" if jsonl else "log"
    return StreamingResponse(
        body(),
        media_type="application/x-ndjson" if jsonl else "text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{suffix}"'},
    )
