"""The stream reader of an API server: it replaces ``LogListener`` in distributed mode.

Every API server runs one ``StreamIngest``: an independent ``XREAD`` reader of every active
job's stream (``jobtrail:log:<job_id>``) and the only writer of its own copy of the per-job
files. It appends batches with ``JobLogStore.append`` and passes start/progress/end on to the
server, in stream order, so the end-of-job barrier holds as in local mode: ``end`` is handled
after every batch before it was written. Seq numbers come from the horse; a batch whose seqs
this server already has (a restarted server re-reading a stream) is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import redis

from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis.records import RedisJobDB
from jobtrail.logstore.store import JobLogStore
from jobtrail.messages import Batch, End, Progress, Started, from_fields
from jobtrail.service.ports import BackendEvents

log = logging.getLogger("jobtrail.ingest")

READ_COUNT = 256  # entries per stream per XREAD
BLOCK_MS = 50  # short: new jobs' streams join the read set at the next turn
REFRESH_SECONDS = 0.1
ENDED_MEMORY = 100_000


class StreamIngest:
    def __init__(
        self,
        conn: redis.Redis,
        db: RedisJobDB,
        store: JobLogStore,
        events: BackendEvents,
        catch_up_seconds: float = b.STREAM_TTL,
    ) -> None:
        self._conn = conn
        self._db = db
        self._store = store
        self._events = events
        self._lock = threading.Lock()
        self._last: dict[str, bytes] = {}  # tracked job -> last stream id read
        self._seq: dict[str, int] = {}  # tracked job -> highest seq in this server's files
        self._ended: OrderedDict[str, None] = OrderedDict()  # end handled by this server
        self._ended_cond = threading.Condition(self._lock)
        self._since = time.time() - catch_up_seconds  # jobs ended since then are caught up
        self._stopping = threading.Event()
        self.batches = 0
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="jobtrail-ingest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def track(self, job_id: str) -> None:
        """Read this job's stream from now on (the submitting server knows it at once)."""
        with self._lock:
            if job_id in self._last or job_id in self._ended:
                return
        last = self._store.stats(job_id).last_seq or 0 if self._store.exists(job_id) else 0
        with self._lock:
            self._last.setdefault(job_id, b"0-0")
            self._seq.setdefault(job_id, last)

    def ended_here(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._ended

    def wait_ended(self, job_id: str, timeout: float) -> bool:
        with self._ended_cond:
            return self._ended_cond.wait_for(lambda: job_id in self._ended, timeout)

    def tracked(self) -> int:
        with self._lock:
            return len(self._last)

    def lag_seconds(self) -> float:
        """The age of the oldest entry not read yet of the streams read: an entry's id is
        its XADD time in ms, by Redis's clock, which TIME reads in the same round trip."""
        with self._lock:
            streams = [(b.log_key(job_id), last) for job_id, last in self._last.items()]
        if not streams:
            return 0.0
        with self._conn.pipeline(transaction=False) as pipe:
            pipe.time()
            for key, last in streams:
                pipe.xrange(key, min=b"(" + last, count=1)
            (seconds, micros), *firsts = pipe.execute()
        oldest = min((int(found[0][0].split(b"-")[0]) for found in firsts if found), default=None)
        return 0.0 if oldest is None else max(0.0, seconds + micros / 1e6 - oldest / 1000)

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        refreshed = 0.0
        pruned = time.monotonic()
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if now - refreshed >= REFRESH_SECONDS:
                    self._refresh()
                    refreshed = now
                if now - pruned >= 5.0:
                    self._prune()
                    pruned = now
                self._read_once()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("redis unreachable (%s); retrying", exc)
                self._stopping.wait(0.5)
            except Exception:  # one bad entry must not stop every job's logging
                log.exception("ingest turn failed")
                self._stopping.wait(0.5)

    def _refresh(self) -> None:
        started = time.time()
        ids = self._db.active_ids() | set(self._db.ended_since(self._since - 5.0))
        self._since = started
        for job_id in ids:
            self.track(job_id)

    def _prune(self) -> None:
        """Stop reading streams that are gone (expired, trimmed away, lost with Redis)."""
        with self._lock:
            tracked = list(self._last)
        if not tracked:
            return
        active = self._db.active_ids()
        with self._conn.pipeline(transaction=False) as pipe:
            for job_id in tracked:
                pipe.exists(b.log_key(job_id))
            exists = pipe.execute()
        for job_id, there in zip(tracked, exists, strict=True):
            if not there and job_id not in active:
                self._forget(job_id, ended=True)

    def _forget(self, job_id: str, ended: bool) -> None:
        with self._lock:
            self._last.pop(job_id, None)
            self._seq.pop(job_id, None)
            if ended:
                self._ended[job_id] = None
                while len(self._ended) > ENDED_MEMORY:
                    self._ended.popitem(last=False)
                self._ended_cond.notify_all()

    def _read_once(self) -> None:
        with self._lock:
            streams = {b.log_key(job_id): last for job_id, last in self._last.items()}
        if not streams:
            self._stopping.wait(BLOCK_MS / 1000)
            return
        reply: Any = self._conn.xread(streams, count=READ_COUNT, block=BLOCK_MS)  # type: ignore[arg-type]
        for key, entries in reply or []:
            job_id = key.decode().rsplit(":", 1)[1]
            for entry_id, fields in entries:
                with self._lock:
                    if job_id not in self._last:
                        break  # ended while we were reading
                    self._last[job_id] = entry_id
                self._handle(job_id, fields)

    def _handle(self, job_id: str, fields: dict[bytes, bytes]) -> None:
        message = from_fields(job_id, fields)
        if isinstance(message, Batch):
            last = message.first_seq + message.line_count - 1
            with self._lock:
                have = self._seq.get(job_id, 0)
            if last <= have:
                return  # already in this server's files (it re-read the stream)
            self._store.append(
                job_id, message.payload, message.first_seq, message.line_count, message.level_mask
            )
            with self._lock:
                self._seq[job_id] = last
            self.batches += 1
            self.records += message.line_count
        elif isinstance(message, Progress):
            self._events.job_progress(job_id, message.pct, message.step)
        elif isinstance(message, Started):
            self._events.job_started(
                job_id, message.pid, message.worker or message.host, message.at
            )
        elif isinstance(message, End):
            self._store.close_job(job_id)
            try:
                self._events.job_ended(job_id, message.outcome)
            finally:
                self._forget(job_id, ended=True)
