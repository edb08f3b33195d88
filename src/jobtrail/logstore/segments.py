"""A read-only view of one job's segments (see ``files``) for one query."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from jobtrail.logstore.files import (
    CHUNK_ENTRIES,
    ENTRY,
    ENTRY_SIZE,
    O_READ,
    Entry,
    data_name,
    idx_name,
    list_segments,
    pread_all,
)
from jobtrail.records import decode_record


class SegmentReader:
    """A read-only view of one job's segments for one query; counts the bytes it reads.

    Index sizes are snapshotted when first opened, so one query sees a consistent prefix of a
    log that is being appended to. A segment unlinked by rotation mid-query reads as missing.
    """

    def __init__(self, dir_fd: int) -> None:
        self.dir_fd = dir_fd  # owned: closed by close()
        self.bytes_read = 0
        self._idx: dict[int, tuple[int, int]] = {}
        self._data: dict[int, int] = {}
        try:
            self.segments = list_segments(dir_fd)
        except BaseException:
            os.close(dir_fd)
            raise

    def close(self) -> None:
        for fd in [fd for fd, _ in self._idx.values()] + list(self._data.values()):
            os.close(fd)
        self._idx.clear()
        self._data.clear()
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def file_sizes(self) -> dict[str, int]:
        """Every regular file in the directory (segments, indexes, strays) and its size."""
        sizes = {}
        for name in os.listdir(self.dir_fd):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    sizes[name] = st.st_size
        return sizes

    def remove_all(self) -> int:
        """Unlink every regular file; returns the bytes freed (retention)."""
        freed = 0
        for name, size in self.file_sizes().items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.dir_fd)
                freed += size
        return freed

    def _open(self, name: str) -> int | None:
        try:
            return os.open(name, O_READ, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return None

    def count(self, seg: int) -> int | None:
        """Number of whole index entries (a torn last entry is ignored); None if gone."""
        if seg in self._idx:
            return self._idx[seg][1]
        fd = self._open(idx_name(seg))
        if fd is None:
            return None
        n = os.fstat(fd).st_size // ENTRY_SIZE
        self._idx[seg] = (fd, n)
        return n

    def entry(self, seg: int, i: int) -> Entry:
        """Entry ``i``; one cut off since the snapshot reads as past everything, never raises."""
        found = self._chunk(seg, i, i + 1)
        return found[0] if found else (2**63, float("inf"), 0, 0, 0, 0)

    def _chunk(self, seg: int, start: int, stop: int) -> list[Entry]:
        raw = pread_all(self._idx[seg][0], (stop - start) * ENTRY_SIZE, start * ENTRY_SIZE)
        self.bytes_read += len(raw)
        return list(ENTRY.iter_unpack(raw[: len(raw) - len(raw) % ENTRY_SIZE]))

    def backward(self, seg: int) -> Iterator[Entry]:
        """Entries newest first, read in 64 KiB chunks."""
        end = self.count(seg) or 0
        while end > 0:
            start = max(0, end - CHUNK_ENTRIES)
            yield from reversed(self._chunk(seg, start, end))
            end = start

    def forward(self, seg: int, start: int = 0) -> Iterator[Entry]:
        """Entries oldest first from entry ``start``, read in 64 KiB chunks."""
        n = self.count(seg) or 0
        while start < n:
            stop = min(n, start + CHUNK_ENTRIES)
            yield from self._chunk(seg, start, stop)
            start = stop

    def _data_fd(self, seg: int) -> int | None:
        fd = self._data.get(seg)
        if fd is None:
            fd = self._open(data_name(seg))
            if fd is not None:
                self._data[seg] = fd
        return fd

    def batch(self, seg: int, offset: int, length: int) -> bytes | None:
        """The bytes of one or more adjacent batches (short if the file is short); None if gone."""
        fd = self._data_fd(seg)
        if fd is None:
            return None
        data = pread_all(fd, length, offset)
        self.bytes_read += len(data)
        return data

    def read_into(self, seg: int, offset: int, buffer: memoryview) -> int | None:
        """``batch`` into the caller's buffer, so a scan of a big log reuses one instead of
        allocating (and page-faulting) a fresh one per read; bytes read (short only at end
        of file), None if the segment is gone."""
        fd = self._data_fd(seg)
        if fd is None:
            return None
        n = os.preadv(fd, [buffer], offset)
        self.bytes_read += n
        return n

    def locate(self, field: int, value: float, inclusive: bool) -> tuple[int, int]:
        """(segment position, entry index) of the last entry whose ``field`` is below ``value``.

        ``inclusive`` means ``<=`` rather than ``<``. Entries are sorted across segments, so the
        segment is chosen by its first entry and the entry by bisecting 32-byte preads.
        """

        def below(e: Entry) -> bool:
            return e[field] <= value if inclusive else e[field] < value

        best = (0, 0)
        for pos, seg in enumerate(self.segments):
            n = self.count(seg)
            if not n:
                continue
            if not below(self.entry(seg, 0)):
                break
            lo, hi = 0, n - 1  # invariant: entry lo is below
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if below(self.entry(seg, mid)):
                    lo = mid
                else:
                    hi = mid - 1
            best = (pos, lo)
        return best

    def first_seq(self) -> int | None:
        """Lowest seq still indexed on disk."""
        for seg in self.segments:
            if self.count(seg):
                return self.entry(seg, 0)[0]
        return None

    def latest_seq(self) -> int:
        """Seq of the newest valid record: scans back from the end of the last indexed batch
        (or of the data, if shorter or unindexed), so torn bytes after a crash are skipped."""
        for seg in reversed(self.segments):
            fd = self._data_fd(seg)
            if fd is None:
                continue
            end, n = os.fstat(fd).st_size, self.count(seg)
            if n:
                _, _, off, length, _, _ = self.entry(seg, n - 1)
                end = min(end, off + length)
            chunk = 8192
            while end > 0:
                start = max(0, end - chunk)
                blob = pread_all(fd, end - start, start)
                self.bytes_read += len(blob)
                lines = blob.split(b"\n")[0 if start == 0 else 1 :]
                for line in reversed(lines):
                    record = decode_record(line) if line else None
                    if record is not None:
                        seq: int = record["seq"]
                        return seq
                if start == 0:
                    break
                cut = blob.find(b"\n")
                if cut >= 0:  # the partial first line goes whole into the next chunk
                    end = start + cut + 1
                chunk = min(chunk * 2, 1 << 20)
        return 0
