"""The files of one job's log: numbered JSONL segments, each with a fixed-size batch index.

A segment ``00000007.jsonl`` holds whole record lines; its sidecar ``00000007.idx`` holds one
32-byte entry per appended batch (first seq, first timestamp, byte offset, byte length, record
count, level bit mask). Readers find what they need from the index and ``pread`` only the
batches that can match, so a query costs the same on a 1 MB log as on a 50 MB one.

Files are never renamed (readers may hold them open): rotation starts the next number and
unlinks the oldest. Everything is opened relative to a directory fd with ``O_NOFOLLOW``, so a
symlink planted in the log tree is refused rather than followed. This module holds the format
and the safe opens; ``segments`` reads it, ``writer`` appends to it.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from datetime import datetime, timezone

from jobtrail.records import LEVEL_BITS, decode_record

JOB_ID_RE = re.compile(r"[a-z][a-z0-9_]{0,47}-[0-9a-f]{12}")
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
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
O_APPEND = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def job_dir(root: str, job_id: str) -> str:
    """The job's directory under ``root``, after making sure the id cannot name anything else."""
    if not isinstance(job_id, str) or JOB_ID_RE.fullmatch(job_id) is None:
        raise ValueError(f"invalid job id {job_id!r}")
    path = os.path.join(root, job_id)
    if os.path.islink(path):
        raise ValueError(f"log directory of {job_id!r} is a symlink")
    return path


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
