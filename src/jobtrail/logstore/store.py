"""Per-job log files and ring buffers: one writer (the log listener), many readers (API threads).

::

    listener ──append(batch)──> JobLogStore ──> writer.SegmentWriter ──> 00000001.jsonl + .idx
                                    │  └──────> rings.RingBuffers (newest lines, in memory)
                                    └─────────> watchers.Watchers (wake live streams)
    API ──read / read_lines / recent / stats──> queries (index-guided scans) over
                                                segments.SegmentReader (own fds per query)

The writer appends whole batches of pre-rendered JSONL lines (see ``records``) with one
``os.write`` plus one 32-byte index entry (see ``files``), so appending costs tens of
microseconds whatever the log's size. Readers never take the write path's lock for a scan:
each query opens its own fds and sees a consistent prefix of the files, using the index to
read only batches that can match. Everything but drop counts is recoverable from disk, so a
restarted server continues where the old one stopped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from jobtrail.logstore import raw
from jobtrail.logstore.files import ALL_LEVELS, JOB_ID_RE, job_dir, open_dir
from jobtrail.logstore.queries import (
    FieldMatch,
    LinePage,
    LogPage,
    Record,
    find_lines,
    find_records,
    newest_lines,
    query_filter,
)
from jobtrail.logstore.rings import RingBuffers
from jobtrail.logstore.ringview import RingViews
from jobtrail.logstore.search import SearchPage, SearchQuery, find_matches
from jobtrail.logstore.segments import SegmentReader
from jobtrail.logstore.watchers import Watchers
from jobtrail.logstore.writer import SegmentWriter
from jobtrail.records import decode_record


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


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({text})"
    return f"write failed ({text})"


class JobLogStore:
    """All jobs' logs under ``root``: ``root/<job_id>/00000001.jsonl`` + ``.idx`` and so on.

    Thread-safe. ``_write_lock`` serialises the (single) writer with the few operations that
    must not interleave with an append (close, delete, rebuilding a ring buffer); ``_lock``
    guards the counters and is only ever held for a few dict operations.
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
        self._ring_jobs = ring_jobs
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._writers: dict[str, SegmentWriter] = {}
        # jobs closed here whose log lost nothing to rotation -> their highest seq: with the
        # ring, what ``tail_at_once`` needs to answer without a file (newest ring_jobs kept)
        self._whole: OrderedDict[str, int] = OrderedDict()
        self._rings = RingBuffers(ring_size, ring_jobs)
        self._views = RingViews()  # the hot routes' work on a ring, until it changes
        self._drops: dict[str, tuple[int, str]] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._watchers = Watchers()
        self._observers: list[Callable[[str, str], None]] = []
        self.bytes_read = 0  # debug counter: bytes all queries have read from disk

    # -- paths ------------------------------------------------------------------------

    def _path(self, job_id: str) -> str:
        return job_dir(self._root, job_id)

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

    @property
    def root(self) -> Path:
        """The directory of every job's log, for a reader in another process (OTLP export)."""
        return Path(self._root)

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
            self._rings.append(job_id, payload, first_seq)
        self._watchers.notify(job_id)
        for observer in self._observers:
            observer(job_id, "append")

    def close_job(self, job_id: str) -> None:
        """The job ended: release its fds. Its ring buffer stays for ``recent``."""
        self._path(job_id)
        with self._write_lock:
            writer = self._writers.pop(job_id, None)
            if writer is not None:
                if writer.segments[0] == 1:
                    self._whole[job_id] = writer.latest_seq
                    while len(self._whole) > self._ring_jobs:
                        self._whole.popitem(last=False)
                writer.close()
        self._watchers.notify(job_id)
        for observer in self._observers:
            observer(job_id, "close")

    def watch(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Have ``callback`` called after each append to the job's log and when it is closed,
        so a live reader waits for data instead of polling the files. It runs in the
        writer's thread and must return at once. Returns the function that stops it."""
        return self._watchers.watch(job_id, callback)

    def observe(self, callback: Callable[[str, str], None]) -> None:
        """Have ``callback(job_id, what)`` called for every job: ``"append"`` after each
        append, ``"close"`` when the job ended (both in the writer's thread: it must return
        at once), ``"delete"`` before retention removes its files (the summary keeper)."""
        self._observers.append(callback)

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
            self._rings.discard(job_id)
            self._views.discard(job_id)
            self._whole.pop(job_id, None)
            for observer in self._observers:
                observer(job_id, "delete")
            with self._lock:
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

    # -- reading ----------------------------------------------------------------------

    def recent(self, job_id: str, n: int = 50) -> list[Record]:
        """Up to ``n`` newest records, newest first, from memory (rebuilt from disk on a miss)."""
        out: list[Record] = []
        for line in reversed(self._ring(job_id)):
            if len(out) >= n:
                break
            record = decode_record(line)
            if record is not None:
                out.append(record)
        return out

    def recent_heads(self, job_id: str, n: int = 50) -> list[bytes]:
        """The JSON of the heads (seq, timestamp, level, logger, message) of the ``n`` newest
        records, newest first: ``recent``'s records cut to those keys, on their bytes."""
        out: list[bytes] = []
        for line in reversed(self._ring(job_id)):
            if len(out) >= n:
                break
            shown = raw.head(line)
            if shown is not None:
                out.append(shown)
        return out

    def recent_heads_at_once(self, job_id: str, n: int = 50) -> list[bytes] | None:
        """``recent_heads`` if the ring is in memory; None: it must be read from disk (call
        ``recent_heads``, in a thread)."""
        self._path(job_id)
        lines = self._rings.lines(job_id)
        if lines is None:
            return None
        return self._views.get(job_id, lines).heads()[:n]

    def tail_at_once(self, job_id: str, tail: int) -> LogPage | None:
        """``read(job_id, tail=tail)`` (no filter) from memory, when memory has all of it: the
        ring holds that many newest lines, or the whole log, and rotation removed nothing
        (known for a job being written, or closed by this store). None: call ``read``."""
        self._path(job_id)
        if tail > self._rings.size:
            return None
        writer = self._writers.get(job_id)
        if writer is not None:
            if writer.segments[0] != 1:
                return None
            latest = writer.latest_seq
        else:
            whole = self._whole.get(job_id)
            if whole is None:
                return None
            latest = whole
        lines = self._rings.lines(job_id)
        if lines is None:
            return None
        return self._views.get(job_id, lines).tail(tail, latest, len(lines) == self._rings.size)

    def _ring(self, job_id: str) -> list[bytes]:
        self._path(job_id)
        lines = self._rings.lines(job_id)
        if lines is None:
            with self._write_lock:  # no append may land between reading and installing
                lines = self._rebuild_ring(job_id)
        return lines

    def _rebuild_ring(self, job_id: str) -> list[bytes]:
        lines = self._rings.lines(job_id)  # another reader may have rebuilt it meanwhile
        if lines is not None:
            return lines
        with self._reading(job_id) as reader:
            if reader is None:
                return []
            lines = newest_lines(reader, self._rings.size)
        self._rings.install(job_id, lines)
        return lines

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
        fields: FieldMatch | None = None,
    ) -> LogPage:
        """Newest ``tail`` matching records, or with ``after``/``since`` the oldest ``tail``
        after that point; records are oldest first either way."""
        flt = query_filter(tail, min_level, after, since, match, fields)
        with self._reading(job_id) as reader:
            if reader is None:
                return LogPage([], None, after, 0, 1, False)
            found, more = find_records(reader, flt, tail)
            latest, truncated = self._bounds(job_id, reader)
        if not found:
            return LogPage([], None, after, latest, truncated, more)
        lines = [line for line, _ in found]
        records = [record for _, record in found]
        last: int = records[-1]["seq"]
        return LogPage(records, records[0]["seq"], last, max(latest, last), truncated, more, lines)

    def read_lines(self, job_id: str, *, after: int, limit: int = 2000) -> LinePage:
        """The stored lines after seq ``after``, oldest first, about ``limit`` of them (whole
        batches: up to one batch more). For a live stream, which frames lines as they are."""
        with self._reading(job_id) as reader:
            if reader is None:
                return LinePage([], [], 0, 1, False)
            seqs, lines, more = find_lines(reader, after, limit)
            latest, truncated = self._bounds(job_id, reader)
        return LinePage(seqs, lines, max([latest, *seqs[-1:]]), truncated, more)

    def search(self, job_id: str, query: SearchQuery) -> SearchPage:
        """Matches of ``query`` in every kept segment, with their context (see ``search``),
        up to ``latest_seq``: the seq written as it began, where a search ``after`` it goes on."""
        writer = self._writers.get(job_id)  # its seq before the reader's snapshot
        began = writer.latest_seq if writer is not None else None
        with self._reading(job_id) as reader:
            if reader is None:
                return SearchPage([], 0 if query.count_all else None, False, None)
            latest, truncated = self._bounds(job_id, reader)
            upto = latest if began is None else began
            page = find_matches(reader, query, until=upto)
            page.latest_seq, page.truncated_before = upto, truncated
        return page

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
