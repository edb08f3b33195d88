"""Server-Sent Events framing: one event, the payloads of the status events, and blocks of
record frames built once from the stored lines and shared by every follower."""

from __future__ import annotations

import json
from array import array
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate, islice
from typing import Any

from jobtrail.logstore import FieldMatch, LinePage, raw
from jobtrail.models import Job
from jobtrail.records import LEVELS

SHUTDOWN_REASON = "the server is stopping"
_RANK = {name: i for i, name in enumerate(LEVELS)}


def dumps(value: Any) -> str:
    """Compact JSON, as the stored lines are, so a frame built either way reads the same."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def event(name: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    # json.dumps never emits a raw newline, so one data line always carries the whole value
    return f"{head}data: {dumps(data)}\n\n".encode()


def line_frame(seq: int, line: bytes) -> bytes:
    """A record's event from its line as served (``raw``): the stored bytes, not re-encoded."""
    return _RECORD_FRAME % (seq, line)


def status_data(job: Job) -> dict[str, Any]:
    """What a ``status`` event carries; a follower sends one whenever this changes."""
    return {
        "status": job.status.value,
        "progress": job.progress,
        "current_step": job.current_step,
        "cancel_requested": job.cancel_requested and not job.status.terminal,  # the page shows it
    }


def end_data(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "error": job.error,
        "failure": job.extra.get("failure") or None,
        "progress": job.progress,
        "duration_s": job.duration_s(),
    }


def shutdown_data(job: Job) -> dict[str, Any]:
    return {"job_id": job.job_id, **status_data(job), "reason": SHUTDOWN_REASON}


@dataclass(frozen=True)
class RecordFilter:
    """What one follower asked for: a minimum level, exact Ansible key matches and
    ``field=`` filters."""

    level: str = "DEBUG"
    match: tuple[tuple[str, str], ...] = ()
    fields: FieldMatch | None = None

    @property
    def filtered(self) -> bool:
        return self.level != LEVELS[0] or bool(self.match) or self.fields is not None

    def accepts(self, record: Mapping[str, Any]) -> bool:
        if _RANK.get(str(record.get("level")), -1) < _RANK[self.level]:
            return False
        if self.fields is not None and not self.fields.accepts(record):
            return False
        return all(str(record.get(k)) == v for k, v in self.match)


@dataclass(eq=False)
class Block:
    """Consecutive records framed as SSE events back to back, or one gap notice.

    Frames are built once from the stored lines (no JSON parsing) and shared by every
    follower, which sends a block whole, or from its cursor on, as a single slice: the cost
    of a follower is per block, not per record. Parsed records exist only if a follower with
    a filter asks for them, and then once per block.
    """

    first: int  # seq of the first record (a gap: the first seq lost)
    last: int  # seq of the last record (a gap: the last seq lost)
    data: bytes
    ends: array[int] | None  # ends[i]: offset just past the frame of record first + i; None: gap
    _records: list[dict[str, Any] | None] | None = None

    def frames_after(self, cursor: int) -> bytes:
        """The frames of the records with a seq above ``cursor``."""
        if self.ends is None or cursor < self.first:
            return self.data
        return self.data[self.ends[cursor - self.first] :]

    def _frame(self, i: int) -> bytes:
        assert self.ends is not None
        return self.data[(self.ends[i - 1] if i else 0) : self.ends[i]]

    def matching_after(self, cursor: int, query: RecordFilter) -> bytes:
        if self.ends is None:
            return self.data
        if self._records is None:  # the JSON between each frame's head and its blank line
            self._records = [
                _record(self._frame(i)[len(_RECORD_HEAD % (self.first + i)) : -2])
                for i in range(len(self.ends))
            ]
        out = []
        for i in range(max(0, cursor + 1 - self.first), len(self.ends)):
            record = self._records[i]
            if record is not None and query.accepts(record):
                out.append(self._frame(i))
        return b"".join(out)


_RECORD_HEAD = b"event: record\nid: %d\ndata: "  # % seq; event() frames the same way
_RECORD_FRAME = _RECORD_HEAD + b"%s\n\n"  # % (seq, the record's JSON line)


def _record(line: bytes) -> dict[str, Any] | None:
    """The record of a framed line (msgspec: builds the dict several times faster)."""
    found = raw.decode(line)
    return None if found is None else found[1]


def gap(first: int, last: int, reason: str) -> Block:
    data = event("gap", {"from": first, "to": last, "reason": reason}, last)
    return Block(first, last, data, None)


def frame_lines(page: LinePage, cursor: int) -> list[Block]:
    """Frame a page of stored lines read after ``cursor``: one block per run of consecutive
    seqs, with a gap notice wherever seqs jump (rotation, or records lost in a crash)."""
    seqs, lines = page.seqs, page.lines
    out: list[Block] = []
    i, n = 0, len(seqs)
    while i < n:
        first = seqs[i]
        if first > cursor + 1:
            reason = "rotated away" if first <= page.truncated_before else "not in the log"
            out.append(gap(cursor + 1, first - 1, reason))
        j = n
        if seqs[-1] - first != n - 1 - i:  # a hole further on: find where this run ends
            j = i + 1
            while seqs[j] == seqs[j - 1] + 1:
                j += 1
        frames = [
            _RECORD_FRAME % (seq, line) for seq, line in zip(seqs[i:j], lines[i:j], strict=True)
        ]
        out.append(
            Block(first, seqs[j - 1], b"".join(frames), array("Q", accumulate(map(len, frames))))
        )
        cursor, i = seqs[j - 1], j
    return out


def blocks_after(blocks: deque[Block], cursor: int) -> Iterator[Block]:
    """The blocks holding a seq above ``cursor`` (bisected: seqs in a window only grow)."""
    lo, hi = 0, len(blocks)
    while lo < hi:
        mid = (lo + hi) // 2
        if blocks[mid].last <= cursor:
            lo = mid + 1
        else:
            hi = mid
    return islice(blocks, lo, None)
