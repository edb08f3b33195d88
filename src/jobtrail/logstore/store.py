"""Per-job log files and ring buffers: one writer (the log listener), many readers (API threads).

The writer appends whole batches of pre-rendered JSONL lines (see ``records``) with one
``os.write`` plus one 32-byte index entry (see ``segments``), so appending costs tens of
microseconds whatever the log's size. Readers never take the write path's lock for a scan:
each query opens its own fds and sees a consistent prefix of the files, using the index to
read only batches that can match. Everything but drop counts is recoverable from disk, so a
restarted server continues where the old one stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from jobtrail.logstore.segments import (
    ALL_LEVELS,
    Entry,
    SegmentReader,
    SegmentWriter,
    open_dir,
    parse_iso,
)
from jobtrail.records import LEVELS, decode_record, levels_at_or_above

JOB_ID_RE = re.compile(r"[a-z][a-z0-9_]{0,47}-[0-9a-f]{12}")
MAX_TAIL = 10_000
RUN_BYTES = 32 * 1024  # adjacent small batches are read together, up to this much

Record = dict[str, Any]


@dataclass
class LogPage:
    """One answer to a log query; ``records`` are oldest first."""

    records: list[Record]
    first_seq: int | None
    last_seq: int | None  # of the last record, or (empty page) the ``after`` asked for
    latest_seq: int  # highest seq written so far, 0 if none
    truncated_before: int  # lowest seq still on disk; 1 if rotation has lost nothing
    more: bool = False  # forward reads: matching records exist after last_seq


@dataclass
class LinePage:
    """Stored lines after a seq, as bytes (each a whole JSON object, no newline), for streams
    that pass records on without looking inside them: nothing is parsed on the fast path."""

    seqs: list[int]
    lines: list[bytes]
    latest_seq: int
    truncated_before: int
    more: bool  # the page stopped at its limit; more lines may follow


@dataclass
class LogStats:
    """Size and health of one job's log; ``bytes`` counts data and index files on disk."""

    bytes: int
    segments: int
    first_seq: int | None
    last_seq: int | None
    dropped: int = 0
    cut_reason: str | None = None
    expired: bool = False  # deleted by this store recently; the caller owns real expiry


@dataclass
class _Filter:
    """One query's record test: cheap byte checks first, JSON parsing only for candidates."""

    min_level: str = "DEBUG"
    after: int | None = None
    since: float | None = None
    match: dict[str, str] | None = None
    mask: int = field(init=False)
    levels: frozenset[str] | None = field(init=False)
    patterns: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.mask = levels_at_or_above(self.min_level)
        wanted = LEVELS[LEVELS.index(self.min_level) :]
        self.levels = None if self.min_level == LEVELS[0] else frozenset(wanted)
        self.patterns = tuple(f'"level":"{name}"'.encode() for name in wanted)

    def __call__(self, line: bytes) -> Record | None:
        if not line:
            return None
        if self.levels is not None and not any(p in line for p in self.patterns):
            return None
        record = decode_record(line)
        if record is None:
            return None
        if self.levels is not None and record.get("level") not in self.levels:
            return None
        if self.after is not None and record["seq"] <= self.after:
            return None
        if self.since is not None:
            ts = parse_iso(str(record.get("timestamp", "")))
            if ts is None or ts < self.since:
                return None
        if self.match and any(str(record.get(k)) != v for k, v in self.match.items()):
            return None
        return record


def _candidates(blob: bytes, flt: _Filter) -> list[bytes]:
    """The lines of ``blob`` that can pass ``flt``, oldest first.

    With a level filter only lines holding one of its level patterns are cut out, found by
    ``bytes.find`` in C: on a log with one ERROR in a thousand records this skips the
    per-line Python work for the other 999.
    """
    if flt.levels is None:
        return blob.split(b"\n")
    starts = set()
    for pattern in flt.patterns:
        pos = blob.find(pattern)
        while pos >= 0:
            starts.add(blob.rfind(b"\n", 0, pos) + 1)
            pos = blob.find(pattern, pos + len(pattern))
    lines = []
    for start in sorted(starts):
        end = blob.find(b"\n", start)
        lines.append(blob[start:] if end < 0 else blob[start:end])
    return lines


def _runs(entries: Iterable[Entry], want: int, forward: bool) -> Iterator[tuple[int, int]]:
    """(offset, length) reads covering the entries whose level mask can match, adjacent ones
    merged so a log of many tiny batches does not cost one syscall per record."""
    start = end = -1
    for _, _, off, length, _, mask in entries:
        if not mask & want:
            continue
        if start >= 0 and end - start < RUN_BYTES:
            if forward and off == end:
                end = off + length
                continue
            if not forward and off + length == start:
                start = off
                continue
        if start >= 0:
            yield start, end - start
        start, end = off, off + length
    if start >= 0:
        yield start, end - start


def _scan_backward(reader: SegmentReader, flt: _Filter) -> Iterator[tuple[bytes, Record]]:
    """Matching (line, record) pairs newest first, lazily, so a tail stops reading early."""
    for seg in reversed(reader.segments):
        for off, length in _runs(reader.backward(seg), flt.mask, forward=False):
            blob = reader.batch(seg, off, length)
            if blob is None:  # rotated away mid-query: everything older is gone too
                return
            for line in reversed(_candidates(blob, flt)):
                record = flt(line)
                if record is not None:
                    yield line, record


def _scan_forward(reader: SegmentReader, flt: _Filter, pos: int, start: int) -> Iterator[Record]:
    """Matching records oldest first from entry ``start`` of segment position ``pos``.

    A segment that vanished (rotation) is skipped only before anything was yielded, so a page
    never has a hole in it; the next page, located afresh, continues past the loss.
    """
    yielded = False
    for p in range(pos, len(reader.segments)):
        seg = reader.segments[p]
        if reader.count(seg) is None and yielded:
            return
        for off, length in _runs(reader.forward(seg, start if p == pos else 0), flt.mask, True):
            blob = reader.batch(seg, off, length)
            if blob is None:
                if yielded:
                    return
                break
            for line in _candidates(blob, flt):
                record = flt(line)
                if record is not None:
                    yielded = True
                    yield record


def _batch_lines(
    blob: bytes, first: int, count: int, after: int, seqs: list[int], lines: list[bytes]
) -> None:
    """Append the lines of one indexed run with a seq above ``after``.

    A run written by a worker holds ``count`` lines numbered ``first`` on without a hole, so
    seqs are counted rather than parsed; both ends are checked to prove it. Anything else (a
    run re-indexed after a crash) has each line parsed for its own seq.
    """
    parts = blob.split(b"\n")
    if parts and not parts[-1]:
        parts.pop()
    last = first + count - 1
    if (
        len(parts) == count
        and parts[0].startswith(b'{"seq":%d,' % first)
        and parts[-1].startswith(b'{"seq":%d,' % last)
    ):
        skip = max(0, after + 1 - first)
        seqs.extend(range(first + skip, last + 1))
        lines.extend(parts[skip:])
        return
    for part in parts:
        record = decode_record(part) if part else None
        if record is not None and record["seq"] > after:
            seqs.append(record["seq"])
            lines.append(part)


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({text})"
    return f"write failed ({text})"


class JobLogStore:
    """All jobs' logs under ``root``: ``root/<job_id>/00000001.jsonl`` + ``.idx`` and so on.

    Thread-safe. ``_write_lock`` serialises the (single) writer with the few operations that
    must not interleave with an append (close, delete, rebuilding a ring buffer); ``_lock``
    guards the ring buffers and counters and is only ever held for a few dict operations.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_segment_bytes: int = 10 * 1024 * 1024,
        max_segments: int = 5,
        ring_size: int = 100,
        ring_jobs: int = 5000,
    ) -> None:
        if max_segment_bytes < 1 or max_segments < 1 or ring_size < 1 or ring_jobs < 1:
            raise ValueError("store limits must be positive")
        self._root = os.fspath(root)
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        self._max_bytes = max_segment_bytes
        self._max_segments = max_segments
        self._ring_size = ring_size
        self._ring_jobs = ring_jobs
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._writers: dict[str, SegmentWriter] = {}
        self._rings: OrderedDict[str, deque[bytes]] = OrderedDict()
        self._drops: dict[str, tuple[int, str]] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self.bytes_read = 0  # debug counter: bytes all queries have read from disk

    # -- paths ------------------------------------------------------------------------

    def _path(self, job_id: str) -> str:
        """The job's directory, after making sure the id cannot name anything else."""
        if not isinstance(job_id, str) or JOB_ID_RE.fullmatch(job_id) is None:
            raise ValueError(f"invalid job id {job_id!r}")
        path = os.path.join(self._root, job_id)
        if os.path.islink(path):
            raise ValueError(f"log directory of {job_id!r} is a symlink")
        return path

    @contextlib.contextmanager
    def _reading(self, job_id: str) -> Iterator[SegmentReader | None]:
        """A reader with its own fds for one query (None if the job has no directory)."""
        try:
            reader = SegmentReader(open_dir(self._path(job_id)))
        except FileNotFoundError:
            yield None
            return
        try:
            yield reader
        finally:
            reader.close()
            with self._lock:
                self.bytes_read += reader.bytes_read

    def log_path(self, job_id: str) -> Path:
        return Path(self._path(job_id))

    def exists(self, job_id: str) -> bool:
        path = self._path(job_id)
        return job_id in self._writers or os.path.isdir(path)

    # -- writing ----------------------------------------------------------------------

    def _writer(self, job_id: str) -> SegmentWriter:
        writer = self._writers.get(job_id)
        if writer is None:
            path = self._path(job_id)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
            writer = SegmentWriter(open_dir(path), self._max_bytes, self._max_segments)
            self._writers[job_id] = writer
            self._deleted.pop(job_id, None)
        return writer

    def append(
        self, job_id: str, payload: bytes, first_seq: int, count: int, levels_mask: int
    ) -> None:
        """Store one batch of ``count`` whole lines; a disk error drops it (counted), no raise."""
        if JOB_ID_RE.fullmatch(job_id) is None:
            raise ValueError(f"invalid job id {job_id!r}")
        if not payload or count <= 0:
            return
        if not payload.endswith(b"\n"):  # a caller bug must not glue the next batch onto it
            payload += b"\n"
        with self._write_lock:
            try:
                self._writer(job_id).append(payload, first_seq, count, levels_mask or ALL_LEVELS)
            except OSError as exc:
                self._count_drop(job_id, count, _reason(exc))
            # Inside the write lock, so a ring rebuilt from the files never misses or doubles
            # a batch.
            self._ring_append(job_id, payload, first_seq)
        self._notify(job_id)

    def _ring_append(self, job_id: str, payload: bytes, first_seq: int) -> None:
        size = self._ring_size
        lines = payload.rsplit(b"\n", size + 1)  # only the last ring_size lines are split off
        if not lines[-1]:
            lines.pop()
        with self._lock:
            ring = self._rings.get(job_id)
            if ring is None:
                if first_seq != 1:  # evicted or restarted: recent() rebuilds it from disk
                    return
                ring = self._rings[job_id] = deque(maxlen=size)
                self._evict_rings()
            else:
                self._rings.move_to_end(job_id)
            ring.extend(lines[-size:])

    def close_job(self, job_id: str) -> None:
        """The job ended: release its fds. Its ring buffer stays for ``recent``."""
        self._path(job_id)
        with self._write_lock:
            writer = self._writers.pop(job_id, None)
            if writer is not None:
                writer.close()
        self._notify(job_id)

    def watch(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Have ``callback`` called after each append to the job's log and when it is closed,
        so a live reader waits for data instead of polling the files. It runs in the
        writer's thread and must return at once. Returns the function that stops it."""
        with self._lock:
            self._watchers.setdefault(job_id, []).append(callback)

        def unwatch() -> None:
            with self._lock:
                callbacks = self._watchers.get(job_id, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._watchers.pop(job_id, None)

        return unwatch

    def _notify(self, job_id: str) -> None:
        callbacks = self._watchers.get(job_id)  # unlocked: one dict read, atomic
        if callbacks:
            for callback in tuple(callbacks):
                callback()

    def count_dropped(self, job_id: str, n: int, reason: str) -> None:
        """Record records lost before they reached the store (shown by ``stats``)."""
        self._path(job_id)
        self._count_drop(job_id, n, reason)

    def _count_drop(self, job_id: str, n: int, reason: str) -> None:
        with self._lock:
            dropped, _ = self._drops.get(job_id, (0, reason))
            self._drops[job_id] = (dropped + n, reason)

    def delete(self, job_id: str) -> int:
        """Remove the job's files and ring buffer (retention); returns the bytes freed."""
        self._path(job_id)
        with self._write_lock:
            writer = self._writers.pop(job_id, None)
            if writer is not None:
                writer.close()
            with self._lock:
                self._rings.pop(job_id, None)
                self._drops.pop(job_id, None)
                self._deleted[job_id] = None
                while len(self._deleted) > self._ring_jobs:
                    self._deleted.popitem(last=False)
            with self._reading(job_id) as reader:
                freed = reader.remove_all() if reader is not None else 0
            with contextlib.suppress(OSError):
                os.rmdir(self._path(job_id))
            return freed

    def close(self) -> None:
        """Close every open fd (server shutdown); readers may still be served afterwards."""
        with self._write_lock:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

    # -- ring buffers -----------------------------------------------------------------

    def _evict_rings(self) -> None:
        while len(self._rings) > self._ring_jobs:
            self._rings.popitem(last=False)

    def recent(self, job_id: str, n: int = 50) -> list[Record]:
        """Up to ``n`` newest records, newest first, from memory (rebuilt from disk on a miss)."""
        self._path(job_id)
        with self._lock:
            ring = self._rings.get(job_id)
            if ring is not None:
                self._rings.move_to_end(job_id)
            lines = list(ring) if ring is not None else None
        if lines is None:
            with self._write_lock:  # no append may land between reading and installing
                lines = self._rebuild_ring(job_id)
        out: list[Record] = []
        for line in reversed(lines):
            if len(out) >= n:
                break
            record = decode_record(line)
            if record is not None:
                out.append(record)
        return out

    def _rebuild_ring(self, job_id: str) -> list[bytes]:
        with self._lock:
            ring = self._rings.get(job_id)
            if ring is not None:
                return list(ring)
        with self._reading(job_id) as reader:
            if reader is None:
                return []
            scan = _scan_backward(reader, _Filter())
            lines = [line for line, _ in islice(scan, self._ring_size)]
        lines.reverse()
        with self._lock:
            self._rings[job_id] = deque(lines, maxlen=self._ring_size)
            self._evict_rings()
        return lines

    # -- reading ----------------------------------------------------------------------

    def _latest(self, job_id: str, reader: SegmentReader) -> int:
        writer = self._writers.get(job_id)
        return writer.latest_seq if writer is not None else reader.latest_seq()

    def _bounds(self, job_id: str, reader: SegmentReader) -> tuple[int, int]:
        """(highest seq written, lowest seq still on disk: 1 while rotation lost nothing)."""
        oldest = reader.segments[0] if reader.segments else 1
        return self._latest(job_id, reader), 1 if oldest == 1 else reader.first_seq() or 1

    def read(
        self,
        job_id: str,
        *,
        tail: int = 100,
        min_level: str = "DEBUG",
        after: int | None = None,
        since: str | None = None,
        match: Mapping[str, str] | None = None,
    ) -> LogPage:
        """Newest ``tail`` matching records, or with ``after``/``since`` the oldest ``tail``
        after that point; records are oldest first either way."""
        if not 1 <= tail <= MAX_TAIL:
            raise ValueError(f"tail must be between 1 and {MAX_TAIL}; got {tail}")
        if min_level not in LEVELS:
            raise ValueError(f"min_level must be one of {', '.join(LEVELS)}; got {min_level!r}")
        since_ts = None if since is None else parse_iso(since)
        if since is not None and since_ts is None:
            raise ValueError(
                f"since must be an ISO 8601 time such as 2026-11-25T12:00:00Z; got {since!r}"
            )
        flt = _Filter(min_level, after, since_ts, dict(match) if match else None)
        more = False
        with self._reading(job_id) as reader:
            if reader is None:
                return LogPage([], None, after, 0, 1, False)
            if after is None and since_ts is None:
                found = [rec for _, rec in islice(_scan_backward(reader, flt), tail)]
                found.reverse()
            else:
                pos = (0, 0)
                if after is not None:
                    pos = max(pos, reader.locate(0, after + 1, inclusive=True))
                if since_ts is not None:
                    pos = max(pos, reader.locate(1, since_ts, inclusive=False))
                scan = _scan_forward(reader, flt, *pos)
                found = list(islice(scan, tail))
                more = next(scan, None) is not None
            latest, truncated = self._bounds(job_id, reader)
        if not found:
            return LogPage([], None, after, latest, truncated, more)
        last: int = found[-1]["seq"]
        return LogPage(found, found[0]["seq"], last, max(latest, last), truncated, more)

    def read_lines(self, job_id: str, *, after: int, limit: int = 2000) -> LinePage:
        """The stored lines after seq ``after``, oldest first, about ``limit`` of them (whole
        batches: up to one batch more). For a live stream, which frames lines as they are."""
        seqs: list[int] = []
        lines: list[bytes] = []
        more = gone = False
        with self._reading(job_id) as reader:
            if reader is None:
                return LinePage(seqs, lines, 0, 1, False)
            pos, start = reader.locate(0, after + 1, inclusive=True)
            for p in range(pos, len(reader.segments)):
                seg = reader.segments[p]
                if reader.count(seg) is None:  # rotated away: a hole only before any line
                    if lines:
                        break
                    continue
                for first, _, off, length, count, _ in reader.forward(
                    seg, start if p == pos else 0
                ):
                    if first + count - 1 <= after:
                        continue
                    if len(lines) >= limit:
                        more = True
                        break
                    blob = reader.batch(seg, off, length)
                    if blob is None:  # rotated away mid-read
                        gone = True
                        break
                    _batch_lines(blob, first, count, after, seqs, lines)
                if more or (gone and lines):
                    break
            latest, truncated = self._bounds(job_id, reader)
        return LinePage(seqs, lines, max([latest, *seqs[-1:]]), truncated, more)

    def stats(self, job_id: str) -> LogStats:
        with self._lock:
            dropped, reason = self._drops.get(job_id, (0, None))
            expired = job_id in self._deleted
        with self._reading(job_id) as reader:
            if reader is None:
                return LogStats(0, 0, None, None, dropped, reason, expired)
            size = sum(reader.file_sizes().values())
            first, last = reader.first_seq(), self._latest(job_id, reader) or None
            segments = len(reader.segments)
        return LogStats(size, segments, first, last, dropped, reason, expired)
