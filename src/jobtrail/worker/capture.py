"""Worker side of capture: every record a job emits becomes a JSONL line in a batch.

Three sources feed one ``RecordBatcher`` per worker process:

* ``BatchQueueHandler`` on the root logger: every logger, no list of names, any thread;
* ``StreamCapture``: file descriptors 1 and 2 are pipes read line by line, so ``print``,
  C extensions and child processes are captured too;
* forked children that log: their inherited handler writes a tagged line to fd 2 (see
  ``CHILD_RECORD_PREFIX``) that ``StreamCapture`` turns back into a structured record, so
  the one seq counter stays in this process.

Records are rendered here (message merged with its args, traceback text), so nothing
unpicklable ever crosses a process boundary and the listener only appends bytes.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from jobtrail.records import (
    LEVEL_BITS,
    MAX_LINE_BYTES,
    TimestampFormatter,
    clean_text,
    encode_record,
    level_name,
)
from jobtrail.worker.redact import Redactor

Message = tuple[Any, ...]
STDOUT_LEVEL = "INFO"  # what a job prints is its normal output
STDERR_LEVEL = "WARNING"  # tools write progress and errors alike to stderr: flag, don't alarm
CHILD_RECORD_PREFIX = "\x1ejobtrail-record\x1f"
_SYNC_MARK = b"\x00\x1ejobtrail-sync\x1f"

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
        send: Callable[[Message], None],
        *,
        max_batch: int = MAX_BATCH,
        interval: float = FLUSH_INTERVAL,
        max_pending: int = MAX_PENDING,
        block_seconds: float = BLOCK_SECONDS,
        redact: Redactor | None = None,
    ) -> None:
        self._send = send
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
        self._lines: list[str] = []
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
        with self._lock:
            self.job_id = job_id
            self._seq = 0
            self._first_seq = 1
            self._dropped = 0
            self._dropped_unreported = 0

    def finish_job(self, outcome: dict[str, Any]) -> None:
        """Send every pending line, then the end message: the listener's barrier."""
        with self._send_lock:
            self._send_pending()
            with self._lock:
                job_id, last_seq, dropped = self.job_id, self._seq, self._dropped
                self.job_id = None
            self._send(("end", job_id, {**outcome, "last_seq": last_seq, "dropped": dropped}))

    def send_event(self, message: Message) -> None:
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
            if len(self._lines) >= self._max_pending and not self._wait_for_room():
                self._dropped += 1
                self._dropped_unreported += 1
                return
            self._seq += 1
            self._lines.append(
                encode_record(self._seq, timestamp, level, logger, message, thread, extra)
            )
            self._bits.append(LEVEL_BITS[level])
            if len(self._lines) >= self._max_batch:
                self._wake.notify()

    def _wait_for_room(self) -> bool:
        """Called with the lock held: wait until the flusher made room, or give up."""
        deadline = time.monotonic() + self._block_seconds
        self._wake.notify()
        while len(self._lines) >= self._max_pending:
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
        """Called with ``_send_lock`` held; sends the pending lines, then any progress."""
        with self._lock:
            if self._dropped_unreported:
                self._seq += 1
                note = (
                    f"jobtrail: {self._dropped_unreported} records were dropped because the "
                    "log listener fell behind"
                )
                self._lines.append(
                    encode_record(
                        self._seq, self._timestamp(time.time()), "WARNING", "jobtrail", note, "-"
                    )
                )
                self._bits.append(LEVEL_BITS["WARNING"])
                self._dropped_unreported = 0
            lines, self._lines = self._lines, []
            bits, self._bits = self._bits, []
            first_seq, self._first_seq = self._first_seq, self._seq + 1
            progress, self._progress = self._progress, None
            job_id = self.job_id
            self._drained.notify_all()
        # Chunks of at most max_batch lines even when more piled up (the flusher may wait for
        # the GIL under load): the store's per-batch level index stays selective.
        for start in range(0, len(lines), self._max_batch):
            chunk = lines[start : start + self._max_batch]
            mask = 0
            for bit in set(bits[start : start + self._max_batch]):
                mask |= bit
            payload = "".join(chunk).encode("utf-8", "replace")
            self._send(("batch", job_id, first_seq + start, len(chunk), mask, payload))
        if progress is not None:
            self._send(("progress", job_id, progress[0], progress[1]))

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


def render_message(record: logging.LogRecord) -> str:
    """The record's message with args merged; a broken format string never breaks the job."""
    try:
        message = record.getMessage()
    except Exception as exc:  # any user __str__ or format error
        message = f"{record.msg!r} % {record.args!r} (message could not be formatted: {exc!r})"
    if record.exc_info:
        message = f"{message}\n{''.join(traceback.format_exception(*record.exc_info)).rstrip()}"
    elif record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if record.stack_info:
        message = f"{message}\n{record.stack_info}"
    return clean_text(message)


class BatchQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler whose 'queue' is the batcher: prepare renders, enqueue batches.

    Structured fields travel on ``record.jobtrail_fields`` (a dict of JSON scalars); any
    other ``extra`` attribute is ignored, so unpicklable extras cannot break logging.
    """

    def __init__(self, batcher: RecordBatcher) -> None:
        super().__init__(batcher)  # type: ignore[arg-type]
        self.batcher = batcher
        self._pid = os.getpid()

    def handle(self, record: logging.LogRecord) -> Any:
        """Without the handler lock of ``Handler.handle``: the batcher serialises what must
        be serial, and holding a lock while rendering would make the job's threads take
        turns formatting their messages."""
        result = self.filter(record)
        if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may replace it
            record = result
        if result:
            try:
                self.enqueue(record)
            except Exception:  # logging must never break the job
                self.handleError(record)
        return result

    def prepare(self, record: logging.LogRecord) -> Any:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        message = render_message(record)
        fields = getattr(record, "jobtrail_fields", None)
        pid = record.process if record.process is not None else os.getpid()
        if pid != self._pid:
            self._emit_from_child(record, message, fields)
            return
        self.batcher.add(
            level_name(record.levelno),
            record.name,
            message,
            record.threadName or "-",
            record.created,
            fields if isinstance(fields, dict) else None,
        )

    def _emit_from_child(self, record: logging.LogRecord, message: str, fields: Any) -> None:
        """In a forked child the batcher's thread is gone: tag the record onto fd 2."""
        data = [
            level_name(record.levelno),
            record.name,
            message,
            record.threadName or "-",
            record.created,
        ]
        if isinstance(fields, dict):
            data.append(fields)
        line = CHILD_RECORD_PREFIX + json.dumps(data, default=str) + "\n"
        try:
            os.write(2, line.encode("utf-8", "replace"))
        except OSError:
            pass


class StreamCapture:
    """Turns fds 1 and 2 into pipes read line by line by two threads of this process.

    Child processes inherit the pipes, so their output lands in the job's log as well.
    ``sync()`` writes a marker down both pipes and waits until both readers reached it:
    everything written before it (by anyone) is then in the batcher.
    """

    def __init__(self, batcher: RecordBatcher) -> None:
        self.batcher = batcher
        self._sync_seen: dict[int, int] = {1: 0, 2: 0}
        self._sync_cond = threading.Condition()
        self._sync_n = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, logger, level in ((1, "stdout", STDOUT_LEVEL), (2, "stderr", STDERR_LEVEL)):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(
                target=self._read_loop,
                args=(read_end, fd, logger, level),
                name=f"jobtrail-{logger}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        # Fresh text streams on the new fds, line buffered so `print` shows up at once.
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115

    def sync(self, timeout: float = 5.0) -> bool:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        with self._sync_cond:
            self._sync_n += 1
            n = self._sync_n
        mark = _SYNC_MARK + str(n).encode() + b"\n"
        for fd in (1, 2):
            try:
                os.write(fd, mark)
            except OSError:
                return False
        with self._sync_cond:
            return self._sync_cond.wait_for(
                lambda: self._sync_seen[1] >= n and self._sync_seen[2] >= n, timeout
            )

    def _read_loop(self, read_fd: int, fd: int, logger: str, level: str) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            if len(pending) > MAX_LINE_BYTES:
                lines.append(pending)
                pending = b""
            for raw in lines:
                self._handle_line(raw, fd, logger, level)

    def _handle_line(self, raw: bytes, fd: int, logger: str, level: str) -> None:
        mark_at = raw.find(_SYNC_MARK)
        if mark_at >= 0:
            if mark_at:
                self._emit_text(raw[:mark_at], logger, level)
            n = int(raw[mark_at + len(_SYNC_MARK) :] or 0)
            with self._sync_cond:
                self._sync_seen[fd] = max(self._sync_seen[fd], n)
                self._sync_cond.notify_all()
            return
        self._emit_text(raw, logger, level)

    def _emit_text(self, raw: bytes, logger: str, level: str) -> None:
        text = raw.decode("utf-8", "replace")
        if text.startswith(CHILD_RECORD_PREFIX) and self._emit_child_record(
            text[len(CHILD_RECORD_PREFIX) :]
        ):
            return
        self.batcher.add(level, logger, clean_text(text), "-")

    def _emit_child_record(self, data: str) -> bool:
        try:
            level, name, message, thread, created, *rest = json.loads(data)
            fields = rest[0] if rest and isinstance(rest[0], dict) else None
            self.batcher.add(
                level_name(logging.getLevelName(level)),
                str(name),
                clean_text(str(message)),
                str(thread),
                float(created),
                fields,
            )
        except (ValueError, TypeError, KeyError):
            return False
        return True


def install(
    batcher: RecordBatcher,
    level: int = logging.DEBUG,
    *,
    clear_inherited: bool = False,
) -> BatchQueueHandler:
    """Install capture on the root logger of this worker process, once.

    ``clear_inherited`` removes handlers a forked child inherited from the server (uvicorn's
    stream handlers, say): in a worker they would only write the same record twice.
    """
    root = logging.getLogger()
    if clear_inherited:
        for logger in [root, *logging.root.manager.loggerDict.values()]:
            if isinstance(logger, logging.Logger):
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
    # Records carry no file, line, process or task name: skip collecting them, as the
    # logging HOWTO's "Optimization" section suggests (the caller lookup walks the stack on
    # every call). Threads stay: a record says which thread emitted it.
    logging._srcfile = None
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False
    handler = BatchQueueHandler(batcher)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler
