"""The files of one job's log: numbered JSONL segments, each with a fixed-size batch index.

A segment ``00000007.jsonl`` holds whole record lines; its sidecar ``00000007.idx`` holds one
32-byte entry per appended batch (first seq, first timestamp, byte offset, byte length, record
count, level bit mask). Readers find what they need from the index and ``pread`` only the
batches that can match, so a query costs the same on a 1 MB log as on a 50 MB one.

Files are never renamed (readers may hold them open): rotation starts the next number and
unlinks the oldest. Everything is opened relative to a directory fd with ``O_NOFOLLOW``, so a
symlink planted in the log tree is refused rather than followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import struct
from collections.abc import Iterator
from datetime import datetime, timezone

from jobtrail.records import LEVEL_BITS, decode_record

ENTRY = struct.Struct("<QdQIHH")  # first_seq, first_ts, offset, length, count, levels_mask
ENTRY_SIZE = ENTRY.size
MAX_ENTRY_RECORDS = 0xFFFF
CHUNK_ENTRIES = 2048  # 64 KiB of index per read
ALL_LEVELS = sum(LEVEL_BITS.values())

# (first_seq, first_ts, offset, length, count, levels_mask)
Entry = tuple[int, float, int, int, int, int]

_SEG_RE = re.compile(r"^([0-9]{8})\.jsonl$")
_TS_KEY = b'"timestamp":"'
_FRACTION = re.compile(r"\.([0-9]{1,6})[0-9]*")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_APPEND = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def data_name(seg: int) -> str:
    return f"{seg:08d}.jsonl"


def idx_name(seg: int) -> str:
    return f"{seg:08d}.idx"


def open_dir(path: str) -> int:
    """An fd on the job directory; a symlink (or a file) there is refused with ValueError."""
    try:
        return os.open(path, _O_DIR)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    raise ValueError(f"log directory {path!r} is not a plain directory")


def list_segments(dir_fd: int) -> list[int]:
    """Segment numbers present in the directory, oldest first."""
    return sorted(int(m.group(1)) for name in os.listdir(dir_fd) if (m := _SEG_RE.match(name)))


def parse_iso(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time (``Z`` or an offset; naive means UTC), None if junk."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:  # Python 3.10 takes only 3 or 6 fraction digits: pad and retry
        padded = _FRACTION.sub(lambda m: "." + (m.group(1) + "00000")[:6], text, count=1)
        try:
            when = datetime.fromisoformat(padded)
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def line_ts(data: bytes, start: int, end: int) -> float | None:
    """The timestamp of the line at ``data[start:end]``, found by slicing rather than parsing."""
    i = data.find(_TS_KEY, start, end)
    j = data.find(b'"', i + len(_TS_KEY), end)
    if i < 0 or j < 0:
        return None
    return parse_iso(data[i + len(_TS_KEY) : j].decode("ascii", "replace"))


def pread_all(fd: int, length: int, offset: int) -> bytes:
    """Up to ``length`` bytes at ``offset``; shorter only at end of file."""
    data = os.pread(fd, length, offset)
    while 0 < len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def write_all(fd: int, data: bytes) -> None:
    """One ``os.write`` normally; loops on a short write (the next call raises if disk is full)."""
    written = os.write(fd, data)
    while written < len(data):
        written += os.write(fd, memoryview(data)[written:])


def index_lines(blob: bytes, base: int, fallback_ts: float) -> bytes:
    """Index entries for lines found on disk without any (a crash between the two writes),
    or for a batch of more than 65535 records (never sent by the worker, so parsing is fine)."""
    found: list[tuple[int, int, int, float, int]] = []  # (start, end, seq, ts, level bit)
    pos = 0
    while pos < len(blob):
        end = blob.find(b"\n", pos) + 1 or len(blob)
        record = decode_record(blob[pos:end])
        if record is not None:
            ts = parse_iso(str(record.get("timestamp", ""))) or fallback_ts
            bit = LEVEL_BITS.get(str(record.get("level")), ALL_LEVELS)
            found.append((pos, end, record["seq"], ts, bit))
        pos = end
    out = []
    for i in range(0, len(found), MAX_ENTRY_RECORDS):
        group = found[i : i + MAX_ENTRY_RECORDS]
        start, mask = group[0][0], 0
        for item in group:
            mask |= item[4]
        out.append(ENTRY.pack(group[0][2], group[0][3], base + start, group[-1][1] - start,
                              len(group), mask))  # fmt: skip
    return b"".join(out)


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
            return os.open(name, _O_READ, dir_fd=self.dir_fd)
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
        data_fd = os.open(data_name(seg), _O_APPEND, 0o600, dir_fd=self.dir_fd)
        try:
            idx_fd = os.open(idx_name(seg), _O_APPEND, 0o600, dir_fd=self.dir_fd)
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
