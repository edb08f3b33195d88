"""One job's log digest: what ``SummaryKeeper`` folds each run of stored lines into.

Everything here works on a run of stored lines at a time with C-level operations
(``bytes.translate``, ``map``, ``zip``, ``Counter``): each line's (shape, level) comes from
``shapes.ShapeCache``, and both the level counts and the shape counts are one ``Counter``
over those; only the lines that become a first or last error, a new shape's example, or a
fold's input are decoded.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from jobtrail.logstore.files import parse_iso
from jobtrail.logstore.folds import RecordFold
from jobtrail.logstore.queries import Record
from jobtrail.logstore.shapes import Kind, ShapeCache, ShapeTable, shape_text
from jobtrail.records import LEVELS, decode_record

VERSION = 1
EXAMPLE_BYTES = 2048  # an example line longer than this is kept with its message cut
_ERRORS = ("ERROR", "CRITICAL")
# JSON escaping makes these bytes unique to a record's own level key
_ERROR_KEYS = tuple(b'Z","level":"%s","logger":' % name.encode() for name in _ERRORS)


@dataclass
class Summary:
    """What ``GET /api/jobs/{id}/summary`` shows of one job's whole log (and its folds)."""

    records: int
    bytes: int
    levels: dict[str, int]
    first_error: Record | None
    last_error: Record | None
    repeated: list[dict[str, Any]]  # {"shape", "count", "first_seq", "last_seq", "example"}
    first_timestamp: str | None
    last_timestamp: str | None
    span_s: float | None
    summarised_to_seq: int
    gap: int  # records rotation deleted before the keeper read them
    truncated_before: int
    records_dropped: int
    folds: dict[str, Any] = field(default_factory=dict)  # name -> RecordFold.result()


def _example(line: bytes) -> Record | None:
    record = decode_record(line)
    if record is not None and len(line) > EXAMPLE_BYTES:
        record["message"] = str(record.get("message", ""))[: EXAMPLE_BYTES // 2] + " …[cut]"
        record.pop("exc_text", None)
    return record


def _timestamp(line: bytes) -> str | None:
    record = decode_record(line)
    return None if record is None else str(record.get("timestamp"))


class LogDigest:
    """The running digest of one job's log; not thread-safe (the keeper holds a lock)."""

    def __init__(self, folds: dict[str, RecordFold], top: int = 500) -> None:
        self.records = self.bytes = self.gap = self.summarised_to_seq = 0
        self.levels = dict.fromkeys(LEVELS, 0)
        self.first_error: Record | None = None
        self.last_error: Record | None = None
        self.first_timestamp: str | None = None
        self.last_timestamp: str | None = None
        self.table = ShapeTable(top)
        self.folds = folds

    # -- folding ------------------------------------------------------------------------
    def fold(self, seqs: list[int], lines: list[bytes], shapes: ShapeCache) -> None:
        """Add a run of stored lines (oldest first, each seq above ``summarised_to_seq``)."""
        if not lines:
            return
        if seqs[0] > self.summarised_to_seq + 1:  # rotation was faster than this keeper
            self.gap += seqs[0] - self.summarised_to_seq - 1
        blob = b"\n".join(lines)
        self.records += len(lines)
        self.bytes += len(blob) + 1
        kinds = shapes.kinds(blob)
        counts = Counter(kinds)
        for (_, level), count in counts.items():
            self.levels[level] = self.levels.get(level, 0) + count
        if any(level in _ERRORS for _, level in counts):
            self.first_error = self.first_error or self._error(lines, reverse=False)
            self.last_error = self._error(lines, reverse=True) or self.last_error
        if self.first_timestamp is None:
            self.first_timestamp = _timestamp(lines[0])
        self.last_timestamp = _timestamp(lines[-1]) or self.last_timestamp
        self._count_shapes(seqs, lines, kinds, counts)
        for fold in self.folds.values():
            if fold.needle and fold.needle not in blob:  # one C-level search, not a loop a line
                continue
            for line in lines if not fold.needle else [x for x in lines if fold.needle in x]:
                record = decode_record(line)
                if record is not None:
                    fold.add(record)
        self.summarised_to_seq = seqs[-1]

    @staticmethod
    def _error(lines: list[bytes], reverse: bool) -> Record | None:
        """The first (or last) ERROR or CRITICAL record of the run, decoded to be sure."""
        for line in reversed(lines) if reverse else lines:
            if any(key in line for key in _ERROR_KEYS):
                record = decode_record(line)
                if record is not None and record.get("level") in _ERRORS:
                    return record
        return None

    def _count_shapes(
        self, seqs: list[int], lines: list[bytes], kinds: list[Kind], counts: Counter[Kind]
    ) -> None:
        last = dict(zip(kinds, seqs, strict=True))
        first = dict(zip(reversed(kinds), reversed(seqs), strict=True))
        index = dict(zip(reversed(kinds), range(len(kinds) - 1, -1, -1), strict=True))
        for kind, count in counts.items():
            self.table.add(kind[0], count, first[kind], last[kind], lines[index[kind]])

    # -- answers and persistence ----------------------------------------------------------
    def summary(self, top: int, truncated_before: int, dropped: int) -> Summary:
        span = None
        if self.first_timestamp and self.last_timestamp:
            start, end = parse_iso(self.first_timestamp), parse_iso(self.last_timestamp)
            span = None if start is None or end is None else round(end - start, 6)
        repeated = [
            {
                "shape": shape_text(shape),
                "count": s.count,
                "first_seq": s.first_seq,
                "last_seq": s.last_seq,
                "example": _example(s.example),
            }
            for shape, s in self.table.top(top)
        ]
        return Summary(
            records=self.records,
            bytes=self.bytes,
            levels=dict(self.levels),
            first_error=self.first_error,
            last_error=self.last_error,
            repeated=repeated,
            first_timestamp=self.first_timestamp,
            last_timestamp=self.last_timestamp,
            span_s=span,
            summarised_to_seq=self.summarised_to_seq,
            gap=self.gap,
            truncated_before=truncated_before,
            records_dropped=dropped,
            folds={name: fold.result() for name, fold in self.folds.items()},
        )

    def to_json(self) -> bytes:
        shapes = [
            [shape.decode("utf-8", "replace"), s.count, s.first_seq, s.last_seq,
             s.example.decode("utf-8", "replace")]
            for shape, s in self.table.shapes.items()
        ]  # fmt: skip
        state = {
            "version": VERSION,
            "summarised_to_seq": self.summarised_to_seq,
            "records": self.records,
            "bytes": self.bytes,
            "gap": self.gap,
            "levels": self.levels,
            "first_error": self.first_error,
            "last_error": self.last_error,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "forgotten": self.table.forgotten,
            "shapes": shapes,
            "folds": {name: fold.to_json() for name, fold in self.folds.items()},
        }
        return json.dumps(state, separators=(",", ":")).encode()

    def restore(self, state: dict[str, Any]) -> None:
        """Take up a saved digest (``to_json``); KeyError/TypeError/ValueError if it is not one."""
        if state["version"] != VERSION:
            raise ValueError(f"summary version {state['version']!r}")
        self.summarised_to_seq = int(state["summarised_to_seq"])
        self.records, self.bytes = int(state["records"]), int(state["bytes"])
        self.gap = int(state["gap"])
        self.levels = {name: int(state["levels"].get(name, 0)) for name in LEVELS}
        self.first_error, self.last_error = state["first_error"], state["last_error"]
        self.first_timestamp, self.last_timestamp = (
            state["first_timestamp"],
            state["last_timestamp"],
        )
        self.table.forgotten = int(state["forgotten"])
        for shape, count, first, last, example in state["shapes"]:
            self.table.add(shape.encode(), int(count), int(first), int(last), example.encode())
