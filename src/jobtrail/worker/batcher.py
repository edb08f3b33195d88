"""Numbering and batching: every record a job emits becomes a JSONL line in a ``Batch``.

The handler (``handler.py``) and the stream readers (``streams.py``) add records from any
thread; the flusher thread sends them in batches through ``send``: down the worker's pipe
in a local pool, as an ``XADD`` to the job's stream in an RQ work-horse. With a ``Spool``,
each line is also written into it before ``add`` returns and released once its batch was
sent, so a process that dies hard loses none of them (``spool.py``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from jobtrail.messages import Batch, End, JobMessage, Outcome, Progress
from jobtrail.records import LEVEL_BITS, TimestampFormatter, encode_record
from jobtrail.worker.redact import Redactor
from jobtrail.worker.spool import Spool

Send = Callable[[JobMessage], None]

# Trade-offs of the batching constants: bigger batches amortise the IPC cost per record,
# shorter intervals make records visible sooner. 256 lines / 20 ms keeps both well inside
# the "visible within 100 ms" promise while cutting IPC messages by two orders of magnitude.
MAX_BATCH = 256
FLUSH_INTERVAL = 0.02
# Lines waiting in this process; past this an emitting thread waits for the flusher (back
# pressure), and after BLOCK_SECONDS of waiting it drops the record and counts it. A job
# logging faster than the listener takes keeps this buffer full, so its size is the delay
# such a job's records see: 2048 lines is about 25 ms at 80k records/s (8192 measured
# 140 ms for a follower, at the same throughput; benchmarks/followers.py).
MAX_PENDING = 2048
BLOCK_SECONDS = 30.0


class RecordBatcher:
    """Numbers, renders and batches the records of the job running in this process.

    Seq numbers are assigned under one lock at the moment a record is added, so they are
    gap-free and keep each thread's order. Only the flusher thread and explicit flushes
    send, under ``_send_lock``, and they take the pending lines inside it, so batches leave
    in seq order.
    """

    def __init__(
        self,
        send: Send,
        *,
        max_batch: int = MAX_BATCH,
        interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
        block_seconds: float = BLOCK_SECONDS,
        redact: Redactor | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._send = send
        self._spool = spool
        self.redact = redact or Redactor()
        self._max_batch = max_batch
        self._interval = interval
        self._max_pending = max_pending
        self._block_seconds = block_seconds
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._timestamp = TimestampFormatter()
        self.job_id: str | None = None
        self._seq = 0
        self._lines: list[bytes] = []
        self._first_seq = 1
        self._bits: list[int] = []  # level bit of each pending line, for each batch's mask
        self._dropped = 0
        self._dropped_unreported = 0
        self._progress: tuple[float, str | None] | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._flush_loop, name="jobtrail-flusher", daemon=True
        )
        self._thread.start()

    # -- job boundaries ---------------------------------------------------------------
    def begin_job(self, job_id: str) -> None:
        with self._send_lock, self._lock:  # no flush in flight: it would release old lines
            if self._spool is not None:
                self._spool.begin(job_id)
            self.job_id = job_id
            self._seq = 0
            self._first_seq = 1
            self._dropped = 0
            self._dropped_unreported = 0

    def finish_job(self, outcome: Outcome) -> None:
        """Send every pending line, then the end message: the listener's barrier."""
        with self._send_lock:
            self._send_pending()
            with self._lock:
                job_id, last_seq, dropped = self.job_id, self._seq, self._dropped
                self.job_id = None
            if job_id is not None:
                outcome = dataclasses.replace(outcome, last_seq=last_seq, dropped=dropped)
                self._send(End(job_id, outcome))

    def send_event(self, message: JobMessage) -> None:
        """Send a control message after every line added before it."""
        with self._send_lock:
            self._send_pending()
            self._send(message)

    def set_progress(self, pct: float, step: str | None) -> None:
        """Coalesced: only the newest progress goes out with the next batch."""
        with self._lock:
            if self.job_id is not None:
                self._progress = (pct, step)
                self._wake.notify()

    # -- adding records ---------------------------------------------------------------
    def add(
        self,
        level: str,
        logger: str,
        message: str,
        thread: str,
        created: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        timestamp = self._timestamp(time.time() if created is None else created)
        message = self.redact(message)
        with self._lock:
            if self.job_id is None:
                return
            spool = self._spool
            if (
                len(self._lines) >= self._max_pending or (spool is not None and spool.full)
            ) and not self._wait_for_room():
                self._dropped += 1
                self._dropped_unreported += 1
                return
            self._seq += 1
            line = encode_record(self._seq, timestamp, level, logger, message, thread, extra)
            data = line.encode("utf-8", "replace")
            if spool is not None:
                spool.write(self._seq, data)
            self._lines.append(data)
            self._bits.append(LEVEL_BITS[level])
            if len(self._lines) >= self._max_batch:
                self._wake.notify()

    def _wait_for_room(self) -> bool:
        """Called with the lock held: wait until the flusher made room, or give up."""
        deadline = time.monotonic() + self._block_seconds
        self._wake.notify()
        spool = self._spool
        while len(self._lines) >= self._max_pending or (spool is not None and spool.full):
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                return False
            self._drained.wait(left)
        return True

    # -- sending ----------------------------------------------------------------------
    def flush(self) -> None:
        with self._send_lock:
            self._send_pending()

    def _send_pending(self) -> None:
        """Called with ``_send_lock`` held; sends the pending lines, then any progress, and
        releases the lines from the spool once they were sent."""
        spool = self._spool
        with self._lock:
            if self._dropped_unreported:
                self._seq += 1
                note = (
                    f"jobtrail: {self._dropped_unreported} records were dropped because the "
                    "log listener fell behind"
                )
                data = encode_record(
                    self._seq, self._timestamp(time.time()), "WARNING", "jobtrail", note, "-"
                ).encode("utf-8", "replace")
                if spool is not None:  # it fits: the spool's limit leaves room to spare
                    spool.write(self._seq, data)
                self._lines.append(data)
                self._bits.append(LEVEL_BITS["WARNING"])
                self._dropped_unreported = 0
            lines, self._lines = self._lines, []
            sent_upto = (spool.head, self._seq) if spool is not None else (0, 0)
            bits, self._bits = self._bits, []
            first_seq, self._first_seq = self._first_seq, self._seq + 1
            progress, self._progress = self._progress, None
            job_id = self.job_id
            self._drained.notify_all()
        if job_id is None:
            return  # between jobs: nothing was added (``add`` drops records then)
        # Chunks of at most max_batch lines even when more piled up (the flusher may wait for
        # the GIL under load): the store's per-batch level index stays selective.
        for start in range(0, len(lines), self._max_batch):
            chunk = lines[start : start + self._max_batch]
            mask = 0
            for bit in set(bits[start : start + self._max_batch]):
                mask |= bit
            self._send(Batch(job_id, first_seq + start, len(chunk), mask, b"".join(chunk)))
        if lines and spool is not None:
            with self._lock:
                spool.release(*sent_upto)
                self._drained.notify_all()
        if progress is not None:
            self._send(Progress(job_id, *progress))

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                if len(self._lines) < self._max_batch and self._progress is None:
                    self._wake.wait(self._interval)
            try:
                self.flush()
            except (OSError, EOFError, ValueError):
                return  # the listener is gone (server stopped); nothing left to send to

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            self._drained.notify_all()
