"""File descriptors 1 and 2 of a job's process, read line by line into the batcher.

``print``, C extensions and child processes (they inherit the fds) are captured too; a
forked child's tagged log line (``handler.CHILD_RECORD_PREFIX``) becomes a structured record.

The pipes are the survivor's (the pool for its worker): it creates them, hands both ends
over (``StreamPipes``) and keeps the read ends. Each reader thread reads into its stream
window in the spool (``window.py``) and records how far it has turned bytes into lines, so
after a hard death the survivor rebuilds the tail (``stream_tail``): the window's bytes past
that point, then what is still in the pipe, as records after the spooled lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobtrail.records import (
    MAX_LINE_BYTES,
    TimestampFormatter,
    clean_text,
    encode_record,
    level_name,
)
from jobtrail.worker import window
from jobtrail.worker.batcher import RecordBatcher
from jobtrail.worker.handler import CHILD_RECORD_PREFIX
from jobtrail.worker.spool import HandedFd, Spool, read_window, stream_tag

STDOUT_LEVEL = "INFO"  # what a job prints is its normal output
STDERR_LEVEL = "WARNING"  # tools write progress and errors alike to stderr: flag, don't alarm
_SYNC_MARK = b"\x00\x1ejobtrail-sync\x1f"
STREAMS = ((1, "stdout", STDOUT_LEVEL), (2, "stderr", STDERR_LEVEL))

# (level, logger, message, thread, created or None for now, extra): a batcher.add's arguments
Record = tuple[str, str, str, str, float | None, Mapping[str, Any] | None]


@dataclass(frozen=True)
class StreamPipes:
    """fd 1's and fd 2's pipes, created by the survivor: (read end, write end) of each."""

    stdout: tuple[HandedFd, HandedFd]
    stderr: tuple[HandedFd, HandedFd]


def create_pipes() -> tuple[StreamPipes, tuple[int, int], tuple[int, int]]:
    """New pipes for a job's process: what to hand over, the read ends to keep, and the
    write ends to close once the process started."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    handed = StreamPipes((HandedFd(out_r), HandedFd(out_w)), (HandedFd(err_r), HandedFd(err_w)))
    return handed, (out_r, err_r), (out_w, err_w)


class StreamCapture:
    """Turns fds 1 and 2 into pipes read line by line by two threads of this process.

    Child processes inherit the pipes, so their output lands in the job's log as well.
    ``sync()`` writes a marker down both pipes and waits until both readers reached it:
    everything written before it (by anyone) is then in the batcher.
    """

    def __init__(
        self, batcher: RecordBatcher, spool: Spool | None = None, pipes: StreamPipes | None = None
    ) -> None:
        self.batcher = batcher
        self._spool = spool
        self._pipes = pipes
        self._sync_seen: dict[int, int] = {1: 0, 2: 0}
        self._sync_cond = threading.Condition()
        self._sync_n = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        handed = (self._pipes.stdout, self._pipes.stderr) if self._pipes else None
        for index, (fd, logger, level) in enumerate(STREAMS):
            if handed is None:
                read_end, write_end = os.pipe()
            else:
                read_end, write_end = handed[index][0].fd, handed[index][1].fd
            os.dup2(write_end, fd)
            os.close(write_end)
            view = self._spool.window(index) if self._spool else memoryview(bytearray(window.SIZE))
            thread = threading.Thread(
                target=self._read_loop,
                args=(read_end, window.StreamWindow(view), index, logger, level),
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

    def _read_loop(
        self, read_fd: int, win: window.StreamWindow, index: int, logger: str, level: str
    ) -> None:
        fd, handle = index + 1, self._handle_line
        spool = self._spool
        tags = spool.tags if spool is not None else {}
        me, stream = threading.get_ident(), stream_tag(index, 0)
        while True:
            try:
                if not win.read_from(read_fd):
                    return
            except OSError:
                return
            lines = win.unconsumed().split(b"\n")
            pending = lines.pop()
            since = spool.head if spool is not None else 0
            win.lines_from(since)
            offset = win.consumed
            for raw in lines:
                offset += len(raw) + 1
                tags[me] = stream | offset  # spooled with the line: none lost, none twice
                handle(raw, fd, logger, level)
            if len(pending) > MAX_LINE_BYTES:
                offset += len(pending)
                tags[me] = stream | offset
                handle(pending, fd, logger, level)
            tags.pop(me, None)
            win.consumed_to(offset, since)
            win.settle()

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
        if text.startswith(CHILD_RECORD_PREFIX):
            self.batcher.add(*line_record(raw, logger, level))
        else:  # the usual line, without line_record's tuple: this is the stdout path
            self.batcher.add(level, logger, clean_text(text), "-")


def line_record(raw: bytes, logger: str, level: str) -> Record:
    """The record of one line of fd 1 or 2: a forked child's tagged record as it logged it,
    else the text at the stream's level."""
    text = raw.decode("utf-8", "replace")
    if text.startswith(CHILD_RECORD_PREFIX):
        try:
            level_no, name, message, thread, created, *rest = json.loads(
                text[len(CHILD_RECORD_PREFIX) :]
            )
            fields = rest[0] if rest and isinstance(rest[0], dict) else None
            return (
                level_name(logging.getLevelName(level_no)),
                str(name),
                clean_text(str(message)),
                str(thread),
                float(created),
                fields,
            )
        except (ValueError, TypeError, KeyError):
            pass
    return level, logger, clean_text(text), "-", None, None


def stream_tail(
    spool_fd: int | None, read_fds: Sequence[int], redact: Callable[[str], str]
) -> list[Record]:
    """The survivor's side, after the job's process (and its orphans) died: the records of
    what it and its children wrote to fd 1 and 2 and its readers never turned into lines,
    stdout's then stderr's. ``spool_fd`` is the spool open (its windows: what the readers
    had taken), ``read_fds`` the kept read ends (what no reader took); both stay open."""
    records: list[Record] = []
    for index, (_, logger, level) in enumerate(STREAMS):
        data = read_window(spool_fd, index) if spool_fd is not None else b""
        if index < len(read_fds):
            data += _drain(read_fds[index])
        for raw in data.split(b"\n"):
            mark_at = raw.find(_SYNC_MARK)
            if mark_at >= 0:
                raw = raw[:mark_at]
            if raw:
                level_, name, message, thread, created, extra = line_record(raw, logger, level)
                records.append((level_, name, redact(message), thread, created, extra))
    return records


def _drain(fd: int) -> bytes:
    """What a pipe holds now, without waiting (an escaped writer may keep it open)."""
    chunks = []
    with contextlib.suppress(OSError):
        os.set_blocking(fd, False)
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def render_tail(records: Sequence[Record], first_seq: int) -> list[bytes]:
    """``stream_tail``'s records as the batcher would have rendered them, numbered from
    ``first_seq`` (after every line the job's log already has)."""
    stamp = TimestampFormatter()
    now = time.time()
    return [
        encode_record(
            first_seq + i,
            stamp(now if created is None else created),
            level,
            logger,
            message,
            thread,
            extra,
        ).encode("utf-8", "replace")
        for i, (level, logger, message, thread, created, extra) in enumerate(records)
    ]
