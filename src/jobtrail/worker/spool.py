"""The spool: every rendered line of a job, in a shared file that outlives the job's process.

The logging call itself writes each numbered line into an mmap'd ring (``Spool.write``, in
the batcher under its lock) before it returns; the flusher sends lines as before and then
``release``s them. If the job's process dies hard (SIGKILL, the OOM killer, ``os._exit``,
a segfault), the process that outlives it — the pool for a local worker, the RQ worker for
its work-horse, which created the file — reads what was never released (``read_unsent``)
and delivers the lines its reader does not have yet, before it records the job's end::

    job's process                              survivor (pool / RQ worker)
    add: seq, render ─► Spool.write ──┐        create_fd(path) before the job's process starts
    flusher: send batch ─► release ───┤ file   after the death: read_unsent(fd, job_id)
                                      └──────► lines with seq > what the reader has

The job's process never opens the file: it maps the fd it was handed (``Spool.from_fd``;
``HandedFd`` carries it across spawn and forkserver, fork inherits it), so a job running as
another user or in a sandbox that cannot reach the survivor's folder still spools.

File layout (little endian)::

    0   magic "JTSPOOL1"
    8   generation   u32    new for every job: older entries stop being valid
    12  job id len   u32, then the job id at 16 (up to 64 bytes)
    80  two release slots (position u64, seq u64, check u32, pad u32): written in turn, so
        one of them is whole even if the process died while writing the other
    HEADER_SIZE: the stream windows of fd 1 and fd 2 (``window.py``): bytes the stream
        readers took from their pipes and had not turned into lines yet
    RING_AT and on: the ring of entries (length u32, seq u64, commit u64, line bytes)

An entry's line is written before its header, and the header's commit word is derived from
the generation, the seq and the length: a process killed before or while writing the header
leaves none that matches, so a torn last write is detected and not delivered (a checksum
over the line would cost more than the rest of the write). Entries are delivered from the
newest whole release slot while each one is whole and numbered one more than the last;
stale entries of an earlier lap have lower seqs and end the scan. A full ring is
back-pressure, not loss: ``full`` says the next line may not fit, and the batcher makes the
logging call wait for the flusher (as for its pending lines).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from multiprocessing import reduction
from threading import get_ident
from typing import Any

from jobtrail.worker import window

MAGIC = b"JTSPOOL2"
CAPACITY = 8 * 1024 * 1024  # ring bytes: well above 2,048 pending lines of usual size
MAX_ENTRY = 1024 * 1024  # a line larger than this is spooled as an empty placeholder
HEADER_SIZE = 4096
RING_AT = HEADER_SIZE + 2 * window.SIZE
_GEN = struct.Struct("<I")
_JOB = struct.Struct("<I64s")
_SLOT = struct.Struct("<QQII")
_SLOTS_AT = 80
_ENTRY = struct.Struct("<IQQQ")
_WRAP = 0xFFFFFFFF  # an entry length meaning "the next entry starts at the ring's start"
_MASK = 0xFFFFFFFF
_HEAD = _ENTRY.size


def _seed(gen: int) -> int:
    """The commit words' seed of a generation: a generation's entries never match another's."""
    return zlib.crc32(_GEN.pack(gen)) << 24


def _slot_check(gen: int, position: int, seq: int) -> int:
    return zlib.crc32(struct.pack("<IQQ", gen, position, seq))


def create_fd(path: str | os.PathLike[str], capacity: int = CAPACITY) -> int:
    """Create an empty spool file, 0600, refusing a symlink or an existing file at ``path``;
    returns it open for reading and writing (not inheritable across exec), to hand over."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, RING_AT + capacity)
        os.pwrite(fd, MAGIC, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create(path: str | os.PathLike[str], capacity: int = CAPACITY) -> None:
    """``create_fd`` for a caller that opens the file later."""
    os.close(create_fd(path, capacity))


class HandedFd:
    """An open fd (a spool, a pipe end) as a process argument: pickled (spawn, forkserver)
    it becomes a duplicate in the child, as a ``Connection`` does; under fork the child
    inherits it. The receiver owns ``fd`` and closes it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_handed_fd, (reduction.DupFd(self.fd),)


def _rebuild_handed_fd(dup: Any) -> HandedFd:
    return HandedFd(dup.detach())


class Spool:
    """The writing side, in the job's process. Not thread-safe: the batcher's lock guards it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            self._map_fd(fd, str(path))
        finally:
            os.close(fd)

    @classmethod
    def from_fd(cls, fd: int) -> Spool:
        """Map a spool the survivor created and handed over; ``fd`` stays the caller's."""
        spool = cls.__new__(cls)
        spool._map_fd(fd, f"fd {fd}")
        return spool

    def _map_fd(self, fd: int, name: str) -> None:
        size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, size)
        if self._map[: len(MAGIC)] != MAGIC:
            raise ValueError(f"{name} is not a jobtrail spool")
        self.capacity = size - RING_AT
        # Past this many unreleased bytes the next line may not fit (it can waste up to one
        # entry's size at the ring's end): the batcher waits for the flusher first.
        self.limit = self.capacity - 2 * (MAX_ENTRY + _ENTRY.size)
        if self.limit <= 0:
            raise ValueError(f"spool {name} is too small")
        self._view = memoryview(self._map)
        self._pack = _ENTRY.pack_into
        self.head = 0  # byte positions, growing forever; the ring offset is pos % capacity
        self.tail = 0
        self.full = False  # the next line may not fit until the flusher releases some
        self._offset = 0  # head % capacity
        self._gen = 0
        self._seed = 0
        self._slot = 0
        # thread ident -> tag: set by a stream reader while it hands lines to the batcher
        self.tags: dict[int, int] = {}

    def begin(self, job_id: str) -> None:
        """A new job: nothing is unreleased (the last job's lines were all sent)."""
        self._gen = (_GEN.unpack_from(self._map, 8)[0] + 1) & _MASK
        _GEN.pack_into(self._map, 8, self._gen)  # first: every older entry is invalid now
        self._seed = _seed(self._gen)
        self.tail = self.head
        self.release(self.head, 0)
        raw = job_id.encode()[:64]
        _JOB.pack_into(self._map, 12, len(raw), raw)

    def write(self, seq: int, line: bytes) -> None:
        """Spool one numbered line; the caller waited while ``full``. On the logging call's
        path, so kept to two copies and a few sums. A stream reader's line carries the
        reader's tag (``tags``), in the same header store: how far its stream is spooled."""
        tags = self.tags
        tag = tags.get(get_ident(), 0) if tags else 0
        length = len(line)
        if length > MAX_ENTRY:
            line, length = b"", 0  # delivered as nothing: the placeholder keeps seqs consecutive
        size = _HEAD + length
        offset = self._offset
        if offset + size > self.capacity:  # no entry straddles the end: start over at 0
            if self.capacity - offset >= _HEAD:
                self._pack(self._view, RING_AT + offset, _WRAP, seq, self._seed ^ seq ^ _WRAP, 0)
            self.head += self.capacity - offset
            offset = 0
        at = RING_AT + offset
        self._view[at + _HEAD : at + size] = line
        # The header last: a process killed before it is written leaves no valid entry.
        self._pack(self._view, at, length, seq, self._seed ^ seq ^ length ^ tag, tag)
        self._offset = offset + size
        self.head += size
        if self.head - self.tail >= self.limit:
            self.full = True

    def release(self, position: int, seq: int) -> None:
        """Lines up to ``position`` (the last one numbered ``seq``) reached the reader."""
        at = _SLOTS_AT + self._slot * _SLOT.size
        _SLOT.pack_into(self._map, at, position, seq, _slot_check(self._gen, position, seq), 0)
        self._slot ^= 1
        self.tail = position
        self.full = self.head - position >= self.limit

    def window(self, index: int) -> memoryview:
        """Stream ``index``'s window (0: fd 1, 1: fd 2), for its reader's ``StreamWindow``."""
        at = HEADER_SIZE + index * window.SIZE
        return self._view[at : at + window.SIZE]

    def close(self) -> None:
        self._view.release()
        self._map.close()


def stream_tag(index: int, consumed: int) -> int:
    """The tag of a line of stream ``index`` that ends at stream offset ``consumed``."""
    return (index + 1) << 56 | consumed


def read_window(fd: int, index: int) -> bytes:
    """What stream ``index``'s reader took from its pipe and never turned into lines, from
    the spool open on ``fd`` (the survivor's, after the death): its window past the
    furthest of what it recorded and what its spooled lines' tags say."""
    try:
        data = _read_all(fd)
    except OSError:
        return b""
    if len(data) <= RING_AT or data[: len(MAGIC)] != MAGIC:
        return b""
    region = memoryview(data)[HEADER_SIZE + index * window.SIZE :][: window.SIZE]
    consumed, since = window.recorded(region)
    (gen,) = _GEN.unpack_from(data, 8)
    for _, tag, _ in _walk(data, gen, since, None):
        if tag >> 56 == index + 1:
            consumed = max(consumed, tag & ((1 << 56) - 1))
    return window.unconsumed(region, consumed)


def read_unsent(spool: str | os.PathLike[str] | int, job_id: str) -> list[tuple[int, bytes]]:
    """(seq, line) of each whole line ``job_id``'s process spooled and never released;
    ``spool`` is its path or an fd open on it (read with pread, left open).

    Empty when the file is not a spool of this job (its process died before it began the
    job), or nothing was left. Lines may include some the reader already has (the process
    died after sending, before releasing): the caller keeps only seqs above its own.
    """
    try:
        data = _read_all(spool)
    except OSError:
        return []
    if len(data) <= RING_AT or data[: len(MAGIC)] != MAGIC:
        return []
    (gen,) = _GEN.unpack_from(data, 8)
    length, raw = _JOB.unpack_from(data, 12)
    if raw[: min(length, 64)] != job_id.encode()[:64]:
        return []
    slots = []
    for i in range(2):
        position, seq, check, _ = _SLOT.unpack_from(data, _SLOTS_AT + i * _SLOT.size)
        if check == _slot_check(gen, position, seq):
            slots.append((seq, position))
    if not slots:
        return []
    seq, position = max(slots)
    return [(s, line) for s, _, line in _walk(data, gen, position, seq) if line]


def _walk(data: bytes, gen: int, position: int, seq: int | None) -> list[tuple[int, int, bytes]]:
    """(seq, stream tag, line) of the whole entries from ring ``position`` on, each numbered
    one more than the last (the first ``seq + 1``; any, for ``seq`` None)."""
    seed = _seed(gen)
    capacity = len(data) - RING_AT
    ring = memoryview(data)[RING_AT:]
    entries: list[tuple[int, int, bytes]] = []
    scanned = 0
    while scanned <= capacity:
        offset = position % capacity
        if capacity - offset < _ENTRY.size:
            position += capacity - offset
            scanned += capacity - offset
            continue
        length, entry_seq, commit, tag = _ENTRY.unpack_from(ring, offset)
        if (seq is not None and entry_seq != seq + 1) or commit != seed ^ entry_seq ^ length ^ tag:
            break  # the end, or torn: the process died while writing this entry
        if length == _WRAP:
            position += capacity - offset
            scanned += capacity - offset
            continue
        end = offset + _ENTRY.size + length
        if end > capacity:
            break
        seq = entry_seq
        entries.append((seq, tag, bytes(ring[offset + _ENTRY.size : end])))
        position += _ENTRY.size + length
        scanned += _ENTRY.size + length
    return entries


def _read_all(spool: str | os.PathLike[str] | int) -> bytes:
    if isinstance(spool, int):
        return os.pread(spool, os.fstat(spool).st_size, 0)
    fd = os.open(spool, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def unsent_batches(
    lines: list[tuple[int, bytes]], after: int, size: int = 256
) -> list[tuple[int, list[bytes]]]:
    """``read_unsent``'s lines numbered above ``after`` (what the reader has), as batches of
    consecutive seqs (a placeholder leaves a hole), at most ``size`` lines each:
    ``(first_seq, lines)``."""
    batches: list[tuple[int, list[bytes]]] = []
    for seq, line in lines:
        if seq <= after:
            continue
        if batches:
            first, run = batches[-1]
            if first + len(run) == seq and len(run) < size:
                run.append(line)
                continue
        batches.append((seq, [line]))
    return batches
