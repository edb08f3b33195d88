"""The append side of one job's log: one ``os.write`` per batch plus one index entry.

A crash (or a full disk) between the two writes leaves lines without an entry, or a torn
line; the writer repairs the newest segment before its next append, so readers only ever
see whole, indexed lines.
"""

from __future__ import annotations

import contextlib
import os

from jobtrail.logstore.files import (
    ENTRY,
    ENTRY_SIZE,
    MAX_ENTRY_RECORDS,
    O_APPEND,
    data_name,
    idx_name,
    index_lines,
    line_ts,
    list_segments,
    pread_all,
    write_all,
)
from jobtrail.logstore.segments import SegmentReader


class SegmentWriter:
    """The append side of one job's log: fds of the newest segment, its size, the latest seq.

    Used only under the store's write lock. Any failed write leaves the writer ``dirty`` so the
    next append first re-syncs with the files (``_repair``) instead of trusting its counters.
    """

    def __init__(self, dir_fd: int, max_bytes: int, max_segments: int) -> None:
        """Takes ownership of ``dir_fd`` (closed even if recovery fails)."""
        self.dir_fd = dir_fd
        self.max_bytes = max_bytes
        self.max_segments = max_segments
        self.data_fd = self.idx_fd = -1
        self.size = self.idx_size = 0
        self.last_ts = 0.0
        self.dirty = True
        try:
            self.segments = list_segments(dir_fd) or [1]
            self._repair()
            reader = SegmentReader(os.dup(dir_fd))
            try:
                self.latest_seq = reader.latest_seq()
            finally:
                reader.close()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in (self.data_fd, self.idx_fd):
            if fd >= 0:
                os.close(fd)
        self.data_fd = self.idx_fd = -1
        os.close(self.dir_fd)

    def _open(self, seg: int) -> tuple[int, int]:
        data_fd = os.open(data_name(seg), O_APPEND, 0o600, dir_fd=self.dir_fd)
        try:
            idx_fd = os.open(idx_name(seg), O_APPEND, 0o600, dir_fd=self.dir_fd)
        except OSError:
            os.close(data_fd)
            raise
        return data_fd, idx_fd

    def _repair(self) -> None:
        """Make the newest segment consistent: whole idx entries, none past the data's end,
        every valid line indexed, and the data ending in a newline (so a torn fragment stays
        its own, skipped, line)."""
        if self.data_fd < 0:
            self.data_fd, self.idx_fd = self._open(self.segments[-1])
        dfd, ifd = self.data_fd, self.idx_fd
        size = os.fstat(dfd).st_size
        on_disk = os.fstat(ifd).st_size
        isize = on_disk - on_disk % ENTRY_SIZE
        end = 0
        while isize:
            entry = ENTRY.unpack(pread_all(ifd, ENTRY_SIZE, isize - ENTRY_SIZE))
            end = entry[2] + entry[3]
            if end <= size:
                self.last_ts = entry[1]
                break
            isize -= ENTRY_SIZE
            end = 0
        if isize != on_disk:
            os.ftruncate(ifd, isize)
        if size > end:
            blob = pread_all(dfd, size - end, end)
            if not blob.endswith(b"\n"):
                write_all(dfd, b"\n")
                blob += b"\n"
                size += 1
            entries = index_lines(blob, end, self.last_ts)
            if entries:
                write_all(ifd, entries)
                isize += len(entries)
        elif size and os.pread(dfd, 1, size - 1) != b"\n":
            write_all(dfd, b"\n")
            size += 1
        self.size, self.idx_size = size, isize
        self.dirty = False

    def _rotate(self) -> None:
        seg = self.segments[-1] + 1
        data_fd, idx_fd = self._open(seg)
        os.close(self.data_fd)
        os.close(self.idx_fd)
        self.data_fd, self.idx_fd = data_fd, idx_fd
        self.segments.append(seg)
        self.size = os.fstat(data_fd).st_size
        self.idx_size = os.fstat(idx_fd).st_size
        if self.size or self.idx_size:
            self.dirty = True  # a leftover file of that number: re-sync before writing
            self._repair()
        while len(self.segments) > self.max_segments:
            old = self.segments.pop(0)
            for name in (data_name(old), idx_name(old)):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self.dir_fd)

    def append(self, payload: bytes, first_seq: int, count: int, mask: int) -> None:
        """Write one batch and its index entry; raises OSError after undoing a partial write."""
        if self.dirty:
            self._repair()
        if self.size and self.size + len(payload) > self.max_bytes:
            self._rotate()
        offset, idx_size = self.size, self.idx_size
        ts = line_ts(payload, 0, len(payload)) or self.last_ts  # the first line's, normally
        try:
            write_all(self.data_fd, payload)
            self.size = offset + len(payload)
            if count <= MAX_ENTRY_RECORDS:
                entries = ENTRY.pack(first_seq, ts, offset, len(payload), count, mask)
            else:
                entries = index_lines(payload, offset, ts)
            write_all(self.idx_fd, entries)
        except OSError:
            self._undo(offset, idx_size)
            raise
        self.idx_size = idx_size + len(entries)
        self.last_ts = ts
        self.latest_seq = first_seq + count - 1

    def _undo(self, offset: int, idx_size: int) -> None:
        """Best effort after a failed write: cut both files back (needs no free space), or at
        least end the torn fragment with a newline so readers skip it."""
        self.dirty = True
        try:
            os.ftruncate(self.data_fd, offset)
        except OSError:
            with contextlib.suppress(OSError):
                os.write(self.data_fd, b"\n")
        with contextlib.suppress(OSError):
            os.ftruncate(self.idx_fd, idx_size)
