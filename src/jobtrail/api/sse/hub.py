"""The hub of one followed running job: one reader for all its followers.

The hub is an asyncio task. The log store pokes it after each append (from the store's
writer thread); it then reads the new lines in a worker thread, at most every
``READ_SPACING``, frames them once as blocks and keeps the newest in a bounded window.
Followers wait on ``changed`` and send from the window. Every call that may block (the job's
status, the reads) runs in a thread, so the event loop only ever moves bytes.

The hubs of an app, and the event that tells them the server is stopping, live in
``app.state``: ``stop_streams`` reaches them from the HTTP server's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from fastapi import FastAPI

from jobtrail.api.sse.frames import Block, frame_lines, status_data
from jobtrail.logstore import LinePage
from jobtrail.models import Job
from jobtrail.service import JobService

log = logging.getLogger("jobtrail.api.stream")

READ_SPACING = 0.02  # a hub reads at most this often: appends meanwhile become one block
STATUS_SECONDS = 0.1  # how often a hub looks at the job's status when nothing is appended
PAGE = 2000  # records per store read of a hub or a download
HUB_BYTES = 16 * 1024 * 1024  # a hub's window of framed records (about 1 s at full speed)
HUB_LINGER = 5.0  # seconds a hub outlives its last follower (quick reconnects reuse it)


def read_blocks(
    service: JobService, job_id: str, after: int, limit: int
) -> tuple[list[Block], LinePage]:
    """One page of a job's log as blocks (in a worker thread: framing is per-record work)."""
    page = service.read_lines(job_id, after=after, limit=limit)
    return frame_lines(page, after), page


@dataclass(eq=False)
class Hub:
    """The newest records of one running job, read once and framed once for all followers."""

    service: JobService
    job_id: str
    cursor: int  # every record up to here has been read (or reported lost)
    start: int = 0  # the window holds every record after this seq up to ``cursor``
    blocks: deque[Block] = field(default_factory=deque)
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
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # the server's: see stopping()

    def __post_init__(self) -> None:
        self.start = self.cursor
        # never more than the files keep: a follower that far behind has already lost records
        config = self.service.config
        self.limit = min(HUB_BYTES, config.log_max_bytes * config.log_segments)

    def wake(self) -> None:
        """Tell every waiting follower that the window, the status or the end moved."""
        self.changed.set()
        self.changed = asyncio.Event()

    def _add(self, block: Block) -> None:
        self.blocks.append(block)
        self.size += len(block.data)
        while len(self.blocks) > 1 and self.size > self.limit:
            old = self.blocks.popleft()
            self.size -= len(old.data)
            self.start = old.last
        self.cursor = block.last

    async def _read_new(self) -> None:
        """Read everything after ``cursor`` into the window, page by page."""
        while True:
            blocks, page = await asyncio.to_thread(
                read_blocks, self.service, self.job_id, self.cursor, PAGE
            )
            for block in blocks:
                self._add(block)
            if blocks:
                self.wake()  # followers send while the next page is read
            if not page.more:
                return

    async def run(self, registry: dict[str, Hub]) -> None:
        loop = asyncio.get_running_loop()

        def poke() -> None:  # in the store's writer thread, after each append
            if not self.poked:
                self.poked = True
                with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                    loop.call_soon_threadsafe(self.appended.set)

        # an in-memory registration (a dict under the store's short lock): fine on the loop
        unwatch = self.service.watch(self.job_id, poke)
        try:
            read = True  # the first pass reads whatever came before the watch began
            while True:
                if self.stopping.is_set():
                    return
                if self.followers == 0 and time.monotonic() - self.idle_since > HUB_LINGER:
                    return
                # the status before the read: a terminal job's whole log is then in the files
                job = await asyncio.to_thread(self.service.get, self.job_id)
                if read or self.poked or job.status.terminal:
                    read = False
                    self.poked = False  # appends from here on poke again
                    self.appended.clear()
                    await self._read_new()
                moved = self.job is None or status_data(job) != status_data(self.job)
                self.job = job
                self.done = job.status.terminal
                if moved or self.done:
                    self.wake()
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
            self.wake()


def _hubs(app: FastAPI) -> dict[str, Hub]:
    hubs: dict[str, Hub] | None = getattr(app.state, "stream_hubs", None)
    if hubs is None:
        hubs = app.state.stream_hubs = {}
    return hubs


def open_hubs(app: FastAPI) -> list[Hub]:
    """The hubs of followed jobs now (for ``/metrics``; on the event loop's thread)."""
    return list(_hubs(app).values())


def stopping(app: FastAPI) -> asyncio.Event:
    """Set once the server begins to shut down (``stop_streams``)."""
    event: asyncio.Event | None = getattr(app.state, "streams_stopping", None)
    if event is None:
        event = app.state.streams_stopping = asyncio.Event()
    return event


def stop_streams(app: FastAPI) -> None:
    """End every open stream now, each with a ``shutdown`` event: called by the HTTP server
    before it waits for open connections, which a follower would otherwise hold until the
    graceful-shutdown timeout cancels it. On the event loop's thread."""
    stopping(app).set()
    for hub in list(_hubs(app).values()):
        hub.appended.set()
        hub.wake()


async def join(app: FastAPI, service: JobService, job_id: str) -> Hub:
    """The job's hub, started if there is none; the caller must ``leave`` it."""
    hubs = _hubs(app)
    hub = hubs.get(job_id)
    if hub is None:  # registered before any await, so concurrent joiners share it
        hub = hubs[job_id] = Hub(service, job_id, 0, stopping=stopping(app))
        hub.followers += 1
        try:
            latest = await asyncio.to_thread(service.read, job_id, tail=1)
        except BaseException:
            leave(hub)
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


def leave(hub: Hub) -> None:
    hub.followers -= 1
    if hub.followers == 0:
        hub.idle_since = time.monotonic()
