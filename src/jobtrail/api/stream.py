"""Live follow: a job's log as Server-Sent Events, and the whole log as one download.

::

    LogListener ─► JobLogStore files ─► _Hub (one per followed running job, one asyncio task)
                                         woken by the store's appends, reads the new lines
                                         (in a thread, at most every 20 ms) and frames them
                                         once, as blocks of SSE events
                                         (bounded: 16 MiB, or less than the files keep)
                                              │ wakes
                                              ▼
                        follower generators (one per connection, no thread each)
                        send each new block whole, as one write, or catch up from the
                        files with cursor reads when they fell behind the window

The records on this path are never parsed: a stored line is already the JSON of its record,
and its seq is counted from its batch's index entry. Only a follower with a filter has a
block's records parsed, once per block. So 100 followers cost about what one does, plus one
write each per block.

A follower never slows the listener, the hub or another follower: it only ever blocks in
its own ``send`` (uvicorn's flow control), and what it has not read yet stays on disk, not
in a queue. If rotation removed records before a follower read them, it gets an
``event: gap`` naming the lost seq range instead of a silent hole.

Events: ``record`` (``id: <seq>``, ``data: <record JSON>``), ``status`` (status, progress,
current_step, cancel_requested), ``gap`` (``{"from": a, "to": b}``, ``id: b``), ``end``
(terminal status, error, failure; then the stream closes), ``shutdown`` (the server is
stopping while the job has not ended: its status now and ``reason``; then the stream
closes, so a follower can say so instead of waiting for the server's shutdown timeout).
``: ping`` comments every 15 s keep proxies and clients from timing out. A reconnect with
``Last-Event-ID`` (or ``after=``) resumes with no gap and no repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from array import array
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate, islice
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse

from jobtrail.api.deps import get_server
from jobtrail.api.schemas import ErrorOut, Level, LevelName, LogFormat
from jobtrail.errors import InvalidQuery
from jobtrail.logstore.store import LinePage
from jobtrail.models import Job
from jobtrail.records import LEVELS, decode_record, text_line
from jobtrail.service.service import JobServer

log = logging.getLogger("jobtrail.api.stream")
router = APIRouter(prefix="/api", tags=["logs"])
Server = Annotated[JobServer, Depends(get_server)]

READ_SPACING = 0.02  # a hub reads at most this often: appends meanwhile become one block
STATUS_SECONDS = 0.1  # how often a hub looks at the job's status when nothing is appended
PING_SECONDS = 15.0  # keep-alive comment when nothing else was sent
PAGE = 2000  # records per store read of a hub or a download
FOLLOWER_PAGE = 1000  # records per store read of a follower catching up (bounds its memory)
CHUNK_BYTES = 256 * 1024  # a follower yields at most about this much at once
HUB_BYTES = 16 * 1024 * 1024  # a hub's window of framed records (about 1 s at full speed)
HUB_LINGER = 5.0  # seconds a hub outlives its last follower (quick reconnects reuse it)
RETRY_MS = 1000  # the reconnect delay an EventSource should use
SHUTDOWN_REASON = "the server is stopping"
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
        "cancel_requested": job.cancel_requested and not job.status.terminal,  # the page shows it
    }


def _end(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "error": job.error,
        "failure": job.extra.get("failure") or None,
        "progress": job.progress,
    }


def _shutdown(job: Job) -> dict[str, Any]:
    return {"job_id": job.job_id, **_status(job), "reason": SHUTDOWN_REASON}


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


@dataclass(eq=False)
class _Block:
    """Consecutive records framed as SSE events back to back, or one gap notice.

    Frames are built once from the stored lines (no JSON parsing) and shared by every
    follower, which sends a block whole, or from its cursor on, as a single slice: the cost
    of a follower is per block, not per record. Parsed records exist only if a follower with
    a filter asks for them, and then once per block.
    """

    first: int  # seq of the first record (a gap: the first seq lost)
    last: int  # seq of the last record (a gap: the last seq lost)
    data: bytes
    ends: array[int] | None  # ends[i]: offset just past the frame of record first + i; None: gap
    _records: list[dict[str, Any] | None] | None = None

    def frames_after(self, cursor: int) -> bytes:
        """The frames of the records with a seq above ``cursor``."""
        if self.ends is None or cursor < self.first:
            return self.data
        return self.data[self.ends[cursor - self.first] :]

    def _frame(self, i: int) -> bytes:
        assert self.ends is not None
        return self.data[(self.ends[i - 1] if i else 0) : self.ends[i]]

    def matching_after(self, cursor: int, query: _Query) -> bytes:
        if self.ends is None:
            return self.data
        if self._records is None:  # the JSON between each frame's head and its blank line
            self._records = [
                decode_record(self._frame(i)[len(_RECORD_HEAD % (self.first + i)) : -2])
                for i in range(len(self.ends))
            ]
        out = []
        for i in range(max(0, cursor + 1 - self.first), len(self.ends)):
            record = self._records[i]
            if record is not None and query.accepts(record):
                out.append(self._frame(i))
        return b"".join(out)


_RECORD_HEAD = b"event: record\nid: %d\ndata: "  # % seq; _event() frames the same way
_RECORD_FRAME = _RECORD_HEAD + b"%s\n\n"  # % (seq, the record's JSON line)


def _gap(first: int, last: int, reason: str) -> _Block:
    data = _event("gap", {"from": first, "to": last, "reason": reason}, last)
    return _Block(first, last, data, None)


def _blocks(page: LinePage, cursor: int) -> list[_Block]:
    """Frame a page of stored lines read after ``cursor``: one block per run of consecutive
    seqs, with a gap notice wherever seqs jump (rotation, or records lost in a crash)."""
    seqs, lines = page.seqs, page.lines
    out: list[_Block] = []
    i, n = 0, len(seqs)
    while i < n:
        first = seqs[i]
        if first > cursor + 1:
            reason = "rotated away" if first <= page.truncated_before else "not in the log"
            out.append(_gap(cursor + 1, first - 1, reason))
        j = n
        if seqs[-1] - first != n - 1 - i:  # a hole further on: find where this run ends
            j = i + 1
            while seqs[j] == seqs[j - 1] + 1:
                j += 1
        frames = [
            _RECORD_FRAME % (seq, line) for seq, line in zip(seqs[i:j], lines[i:j], strict=True)
        ]
        out.append(
            _Block(first, seqs[j - 1], b"".join(frames), array("Q", accumulate(map(len, frames))))
        )
        cursor, i = seqs[j - 1], j
    return out


def _read_blocks(
    server: JobServer, job_id: str, after: int, limit: int
) -> tuple[list[_Block], LinePage]:
    """One page of a job's log as blocks (in a worker thread: framing is per-record work)."""
    page = server.read_lines(job_id, after=after, limit=limit)
    return _blocks(page, after), page


@dataclass(eq=False)
class _Hub:
    """The newest records of one running job, read once and framed once for all followers."""

    server: JobServer
    job_id: str
    cursor: int  # every record up to here has been read (or reported lost)
    start: int = 0  # the window holds every record after this seq up to ``cursor``
    blocks: deque[_Block] = field(default_factory=deque)
    size: int = 0
    job: Job | None = None
    done: bool = False  # the job is terminal and its whole log was read
    followers: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # cursor and task are set
    task: asyncio.Task[None] | None = None
    limit: int = HUB_BYTES
    appended: asyncio.Event = field(default_factory=asyncio.Event)  # the store says: new lines
    poked: bool = False  # ``appended`` is already being set (written by the store's thread)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # the server's, see _stopping

    def __post_init__(self) -> None:
        self.start = self.cursor
        # never more than the files keep: a follower that far behind has already lost records
        config = self.server.config
        self.limit = min(HUB_BYTES, config.log_max_bytes * config.log_segments)

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def _add(self, block: _Block) -> None:
        self.blocks.append(block)
        self.size += len(block.data)
        while len(self.blocks) > 1 and self.size > self.limit:
            old = self.blocks.popleft()
            self.size -= len(old.data)
            self.start = old.last
        self.cursor = block.last

    async def run(self, registry: dict[str, _Hub]) -> None:
        loop = asyncio.get_running_loop()

        def poke() -> None:  # in the store's writer thread, after each append
            if not self.poked:
                self.poked = True
                with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                    loop.call_soon_threadsafe(self.appended.set)

        unwatch = self.server.watch(self.job_id, poke)
        try:
            read = True  # the first pass reads whatever came before the watch began
            while True:
                if self.stopping.is_set():
                    return
                if self.followers == 0 and time.monotonic() - self.idle_since > HUB_LINGER:
                    return
                job = self.server.get(self.job_id)  # before reading: see _follow
                if read or self.poked or job.status.terminal:
                    read = False
                    self.poked = False  # appends from here on poke again
                    self.appended.clear()
                    while True:
                        blocks, page = await asyncio.to_thread(
                            _read_blocks, self.server, self.job_id, self.cursor, PAGE
                        )
                        for block in blocks:
                            self._add(block)
                        if blocks:
                            self._wake()  # followers send while the next page is read
                        if not page.more:
                            break
                moved = self.job is None or _status(job) != _status(self.job)
                self.job = job
                self.done = job.status.terminal
                if moved or self.done:
                    self._wake()
                if self.done:
                    return
                await asyncio.sleep(READ_SPACING)
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self.appended.wait(), STATUS_SECONDS - READ_SPACING)
        except Exception:  # a follower notices the hub stopped and starts a fresh one
            log.exception("stream hub of %s failed", self.job_id)
            await asyncio.sleep(READ_SPACING)
        finally:
            unwatch()
            if registry.get(self.job_id) is self:
                del registry[self.job_id]
            self._wake()


def _hubs(app: FastAPI) -> dict[str, _Hub]:
    hubs: dict[str, _Hub] | None = getattr(app.state, "stream_hubs", None)
    if hubs is None:
        hubs = app.state.stream_hubs = {}
    return hubs


def _stopping(app: FastAPI) -> asyncio.Event:
    """Set once the server begins to shut down (``stop_streams``)."""
    stopping: asyncio.Event | None = getattr(app.state, "streams_stopping", None)
    if stopping is None:
        stopping = app.state.streams_stopping = asyncio.Event()
    return stopping


def stop_streams(app: FastAPI) -> None:
    """End every open stream now, each with a ``shutdown`` event: called by the HTTP server
    before it waits for open connections, which a follower would otherwise hold until the
    graceful-shutdown timeout cancels it. On the event loop's thread."""
    _stopping(app).set()
    for hub in list(_hubs(app).values()):
        hub.appended.set()
        hub._wake()


async def _join(request: Request, server: JobServer, job_id: str) -> _Hub:
    """The job's hub, started if there is none; the caller must ``_leave`` it."""
    hubs = _hubs(request.app)
    hub = hubs.get(job_id)
    if hub is None:  # registered before any await, so concurrent joiners share it
        hub = hubs[job_id] = _Hub(server, job_id, 0, stopping=_stopping(request.app))
        hub.followers += 1
        try:
            latest = await asyncio.to_thread(server.read, job_id, tail=1)
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


async def _from_files(
    server: JobServer, job_id: str, cursor: int, bound: int | None, query: _Query
) -> AsyncGenerator[tuple[int, bytes], None]:
    """Matching records after ``cursor`` from the files, in pages; (new cursor, bytes).

    ``bound``: a seq every record up to which the files already held before the first read,
    so an empty filtered page can still move the cursor that far."""
    match = dict(query.match) or None
    while True:
        if not query.filtered:
            blocks, lines = await asyncio.to_thread(
                _read_blocks, server, job_id, cursor, FOLLOWER_PAGE
            )
            more, latest, truncated = lines.more, lines.latest_seq, lines.truncated_before
            out = [block.data for block in blocks]  # gap notices included
            first = blocks[0].first if blocks else latest + 1
            last = blocks[-1].last if blocks else None
        else:
            page = await asyncio.to_thread(
                server.read,
                job_id,
                tail=FOLLOWER_PAGE,
                min_level=query.level,
                after=cursor,
                match=match,
            )
            more, latest, truncated = page.more, page.latest_seq, page.truncated_before
            out = [_record_frame(r) for r in page.records]
            first = page.first_seq if page.first_seq is not None else latest + 1
            last = page.last_seq if page.records else None
        if truncated > cursor + 1 and first > cursor + 1 and (query.filtered or not out):
            lost_to = min(truncated - 1, first - 1)
            out.insert(0, _gap(cursor + 1, lost_to, "rotated away").data)
            cursor = lost_to
        if last is not None:
            cursor = last
        if not more and bound is not None:
            cursor = max(cursor, bound)
        yield cursor, b"".join(out)
        if not more:
            return


async def _follow(
    request: Request, server: JobServer, job: Job, cursor: int, query: _Query
) -> AsyncIterator[bytes]:
    """The event stream of one follower, from ``cursor`` (exclusive) to the job's end."""
    job_id = job.job_id
    yield f"retry: {RETRY_MS}\n\n".encode()
    last_status = _status(job)
    yield _event("status", last_status)

    if job.status.terminal:  # a finished job: replay what is on disk, then end
        async with contextlib.aclosing(_from_files(server, job_id, cursor, None, query)) as pages:
            async for _, chunk in pages:
                if chunk:
                    yield chunk
        yield _event("end", _end(job))
        return

    stopping = _stopping(request.app)
    hub = await _join(request, server, job_id)
    try:
        last_sent = time.monotonic()
        while True:
            if stopping.is_set():
                yield _event("shutdown", _shutdown(hub.job or job))
                return
            changed = hub.changed
            sent = False
            if cursor < hub.start:  # behind the window: catch up from the files
                pages = _from_files(server, job_id, cursor, hub.start, query)
                async with contextlib.aclosing(pages):
                    async for moved, chunk in pages:
                        cursor = moved
                        if chunk:
                            sent = True
                            yield chunk
                        if cursor >= hub.start or stopping.is_set():  # the window has the rest
                            break
            else:
                parts: list[bytes] = []
                size = 0
                # the window only changes between our awaits, so a scan is safe
                for block in _blocks_after(hub.blocks, cursor):
                    if query.filtered:
                        part = block.matching_after(cursor, query)
                    else:
                        part = block.frames_after(cursor)
                    cursor = block.last
                    if part:
                        parts.append(part)
                        size += len(part)
                        if size >= CHUNK_BYTES:
                            break
                if parts:
                    sent = True
                    yield parts[0] if len(parts) == 1 else b"".join(parts)
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
            if (hub.task is None or hub.task.done()) and not hub.done and not stopping.is_set():
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
            if stopping.is_set():
                continue  # the top of the loop says goodbye
            if changed is hub.changed and not (hub.done and cursor < hub.cursor):
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), PING_SECONDS)
    finally:
        _leave(hub)


def _blocks_after(blocks: deque[_Block], cursor: int) -> Iterator[_Block]:
    """The blocks holding a seq above ``cursor`` (bisected: seqs in a window only grow)."""
    lo, hi = 0, len(blocks)
    while lo < hi:
        mid = (lo + hi) // 2
        if blocks[mid].last <= cursor:
            lo = mid + 1
        else:
            hi = mid
    return islice(blocks, lo, None)


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
        page = server.read(
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
    format: Annotated[
        LogFormat, Query(description="text lines, or one JSON record per line (jsonl or json)")
    ] = LogFormat.text,
    level: Annotated[LevelName, Query()] = Level.DEBUG,
) -> StreamingResponse:
    """The whole log as it is now, oldest first: text lines, or the JSONL records."""
    server.check_logs(job_id)
    jsonl = format.records
    min_level = level.value

    async def body() -> AsyncIterator[bytes]:
        cursor = 0
        while True:
            if jsonl and level is Level.DEBUG:  # the stored lines are the records' JSON already
                raw = await asyncio.to_thread(server.read_lines, job_id, after=cursor, limit=PAGE)
                if raw.lines:
                    yield b"\n".join(raw.lines) + b"\n"
                    cursor = raw.seqs[-1]
                if not raw.more:
                    return
                continue
            page = await asyncio.to_thread(
                server.read, job_id, tail=PAGE, after=cursor, min_level=min_level
            )
            if jsonl:
                if page.records:
                    yield "".join(_dumps(r) + "\n" for r in page.records).encode()
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

    suffix = "jsonl" if jsonl else "log"
    return StreamingResponse(
        body(),
        media_type="application/x-ndjson" if jsonl else "text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{suffix}"'},
    )
