"""The one listener: the only writer of log files, reading every worker's pipe.

It runs as a thread of the server rather than a process of its own: it mostly waits in
``wait()`` and ``os.write`` (both release the GIL), appends pre-rendered bytes, and keeps
ring buffers in the same memory the API reads, so ``GET /api/jobs/{id}`` never crosses a
process boundary. ``benchmarks/api_latency.py`` measures what it costs the API.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from multiprocessing.connection import Connection, wait
from typing import Protocol

from jobtrail.messages import Batch, End, Message
from jobtrail.records import decode_record
from jobtrail.worker.spool import unsent_batches
from jobtrail.worker.streams import Record, render_tail

log = logging.getLogger("jobtrail.listener")

MAX_MESSAGES_PER_TURN = 64  # per ready pipe, so one flooding worker cannot starve the rest


class RecordSink(Protocol):
    def append(
        self, job_id: str, payload: bytes, first_seq: int, count: int, levels_mask: int
    ) -> None: ...
    def close_job(self, job_id: str) -> None: ...


class LogListener:
    """Reads batches from worker pipes into the store; passes control messages on.

    ``on_message(worker_id, message)`` gets everything that is not a ``Batch`` (``Ready``,
    ``Started``, ``Progress``, ``End``) in pipe order, i.e. after the batches sent before it
    were appended.
    ``on_drained(worker_id)`` says a worker's pipe reached EOF: it and all its descendants
    are gone, and everything they sent is written. ``recover`` then writes the lines its
    spool still held that never came down the pipe.
    """

    def __init__(
        self,
        sink: RecordSink,
        on_message: Callable[[int, Message], None],
        on_drained: Callable[[int], None],
    ) -> None:
        self._sink = sink
        self._on_message = on_message
        self._on_drained = on_drained
        self._channels: dict[Connection, int] = {}
        self._last_seq: dict[str, int] = {}  # running job -> seq of its last line written
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self.batches = 0
        self.records = 0
        self._waiting = False  # in wait(): every pipe was empty (nothing waits)
        self._last_payload = b""  # the batch written last, for ``lag_seconds``
        self._thread = threading.Thread(target=self._run, name="jobtrail-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add_channel(self, worker_id: int, conn: Connection) -> None:
        with self._lock:
            self._channels[conn] = worker_id
        self._wake()

    def recover(
        self, job_id: str, lines: list[tuple[int, bytes]], tail: Sequence[Record] = ()
    ) -> int:
        """Write the (seq, line) pairs of a dead worker's spool that are newer than what its
        pipe delivered, in order, then ``tail`` (what its fd 1 and 2 held, ``stream_tail``)
        numbered after them; called once its pipe is drained. Returns how many."""
        written = 0
        last = self._last_seq.pop(job_id, 0)
        for first_seq, chunk in unsent_batches(lines, last):
            # level mask 0: the store indexes the batch as holding every level
            self._sink.append(job_id, b"".join(chunk), first_seq, len(chunk), 0)
            written += len(chunk)
            last = first_seq + len(chunk) - 1
        rendered = render_tail(tail, last + 1)
        for start in range(0, len(rendered), 256):
            chunk = rendered[start : start + 256]
            self._sink.append(job_id, b"".join(chunk), last + 1 + start, len(chunk), 0)
        written += len(rendered)
        self._sink.close_job(job_id)  # as its End would have
        self.records += written
        return written

    def lag_seconds(self) -> float:
        """0 while the listener waits on empty pipes; while it reads, the age of the first
        record of the batch it writes or wrote last: the pipes are FIFO, so what still waits
        in them was sent after it (the age counts the worker's batching too, a few ms)."""
        payload = self._last_payload
        if self._waiting or not payload:
            return 0.0
        first = decode_record(payload[: payload.find(b"\n")])
        stamp = first.get("timestamp") if first else None
        if not isinstance(stamp, str):
            return 0.0
        written = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        return max(0.0, time.time() - written)

    def stop(self, timeout: float = 5.0) -> None:
        """Drain what is readable now, then stop; records sent later are not written."""
        self._stopping = True
        self._wake()
        self._thread.join(timeout)
        with self._lock:
            for conn in self._channels:
                conn.close()
            self._channels.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake

    def _run(self) -> None:
        while True:
            with self._lock:
                conns = list(self._channels)
            self._waiting = True
            ready = wait([*conns, self._wake_r])
            self._waiting = False
            for item in ready:
                if item == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                assert isinstance(item, Connection)
                self._read_some(item)
            if self._stopping:
                return

    def _read_some(self, conn: Connection) -> None:
        worker_id = self._channels[conn]
        try:
            for _ in range(MAX_MESSAGES_PER_TURN):
                self._handle(worker_id, conn.recv())
                if not conn.poll():
                    return
        except (EOFError, OSError):
            self._close_channel(conn, worker_id)
        except Exception:  # a torn message from a killed worker: its pipe is done
            log.exception("unreadable message from worker %s; closing its pipe", worker_id)
            self._close_channel(conn, worker_id)

    def _close_channel(self, conn: Connection, worker_id: int) -> None:
        with self._lock:
            self._channels.pop(conn, None)
        conn.close()
        self._on_drained(worker_id)

    def _handle(self, worker_id: int, message: Message) -> None:
        if isinstance(message, Batch):
            self._last_payload = message.payload  # before: a write that hangs shows its age
            self._sink.append(
                message.job_id,
                message.payload,
                message.first_seq,
                message.line_count,
                message.level_mask,
            )
            self._last_seq[message.job_id] = message.first_seq + message.line_count - 1
            self.batches += 1
            self.records += message.line_count
            return
        if isinstance(message, End):
            self._last_seq.pop(message.job_id, None)
            self._sink.close_job(message.job_id)
        try:
            self._on_message(worker_id, message)
        except Exception:  # a failing job-state update must not stop every job's logging
            log.exception("handling %s from worker %s failed", type(message).__name__, worker_id)
