"""File descriptors 1 and 2 of a job's process, read line by line into the batcher.

``print``, C extensions and child processes (they inherit the fds) are captured too; a
forked child's tagged log line (``handler.CHILD_RECORD_PREFIX``) becomes a structured record.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

from jobtrail.records import MAX_LINE_BYTES, clean_text, level_name
from jobtrail.worker.batcher import RecordBatcher
from jobtrail.worker.handler import CHILD_RECORD_PREFIX

STDOUT_LEVEL = "INFO"  # what a job prints is its normal output
STDERR_LEVEL = "WARNING"  # tools write progress and errors alike to stderr: flag, don't alarm
_SYNC_MARK = b"\x00\x1ejobtrail-sync\x1f"


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
