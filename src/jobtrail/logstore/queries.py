"""Log queries over one job's segments: the record filter, the index-guided scans, pages.

A query reads the index first and ``pread``s only the batches whose level mask can match,
adjacent ones merged (``_runs``); inside a batch cheap byte tests come before JSON parsing
(``_candidates``, ``RecordFilter``, ``FieldMatch``). Tails scan newest first and stop early;
reads after a seq or a time start at the entry ``SegmentReader.locate`` finds by bisection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from jobtrail.logstore import raw
from jobtrail.logstore.files import Entry, parse_iso
from jobtrail.logstore.segments import SegmentReader
from jobtrail.records import LEVELS, decode_record, field_text, levels_at_or_above

MAX_TAIL = 10_000
RUN_BYTES = 32 * 1024  # adjacent small batches are read together, up to this much

Record = dict[str, Any]
_encode_str = json.encoder.encode_basestring  # as the worker encodes keys and strings


@dataclass
class LogPage:
    """One answer to a log query; ``records`` are oldest first, ``lines`` their JSON as
    stored (to splice into an answer: see ``raw``)."""

    records: list[Record]
    first_seq: int | None
    last_seq: int | None  # of the last record, or (empty page) the ``after`` asked for
    latest_seq: int  # highest seq written so far, 0 if none
    truncated_before: int  # lowest seq still on disk; 1 if rotation has lost nothing
    more: bool = False  # forward reads: matching records exist after last_seq
    lines: list[bytes] = field(default_factory=list)
    texts: list[str] | None = None  # ``text_line`` of each record, when already made


@dataclass
class LinePage:
    """Stored lines after a seq, as bytes (each a whole JSON object, no newline), for streams
    that pass records on without looking inside them: nothing is parsed on the fast path."""

    seqs: list[int]
    lines: list[bytes]
    latest_seq: int
    truncated_before: int
    more: bool  # the page stopped at its limit; more lines may follow


FIELD_FORM = "field must be KEY:VALUE, such as field=attempt:3"


@dataclass(frozen=True)
class FieldMatch:
    """``field=KEY:VALUE`` filters (all must hold) on a record's ``fields``, parsed once.

    VALUE is compared with the text of the stored value: a string as it is, any other scalar
    as its JSON, so ``attempt:3`` matches 3 and "3". Before any JSON is parsed, a line (or a
    whole batch) must hold each pair's bytes as the worker encodes them (``"KEY":"VALUE"`` or
    ``"KEY":VALUE``): most lines of a log are refused by a few ``bytes.find`` calls in C.
    """

    pairs: tuple[tuple[str, str], ...]
    needles: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        needles = []
        for key, value in self.pairs:
            head = _encode_str(key).encode() + b":"
            needles.append((head + _encode_str(value).encode(), head + value.encode()))
        object.__setattr__(self, "needles", tuple(needles))

    @classmethod
    def parse(cls, specs: Iterable[str] | None) -> FieldMatch | None:
        """The filter of ``field=`` query values, None for none; ValueError saying the form."""
        pairs = []
        for spec in specs or ():
            key, colon, value = spec.partition(":")
            if not colon or not key:
                raise ValueError(f"{FIELD_FORM} (the key before the first ':'); got {spec!r}")
            pairs.append((key, value))
        return cls(tuple(pairs)) if pairs else None

    def may_match(self, data: bytes) -> bool:
        """False when ``data`` (a line, or a batch of lines) cannot hold a matching record."""
        return all(quoted in data or bare in data for quoted, bare in self.needles)

    def accepts(self, record: Mapping[str, Any]) -> bool:
        fields = record.get("fields")
        if not isinstance(fields, dict):
            return False
        for key, value in self.pairs:
            if key not in fields or field_text(fields[key]) != value:
                return False
        return True


@dataclass
class RecordFilter:
    """One query's record test: cheap byte checks first, JSON parsing only for candidates."""

    min_level: str = "DEBUG"
    after: int | None = None
    since: float | None = None
    match: dict[str, str] | None = None
    fields: FieldMatch | None = None
    mask: int = field(init=False)
    levels: frozenset[str] | None = field(init=False)
    patterns: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.mask = levels_at_or_above(self.min_level)
        wanted = LEVELS[LEVELS.index(self.min_level) :]
        self.levels = None if self.min_level == LEVELS[0] else frozenset(wanted)
        self.patterns = tuple(f'"level":"{name}"'.encode() for name in wanted)

    def __call__(self, line: bytes) -> Record | None:
        found = self.pair(line)
        return None if found is None else found[1]

    def pair(self, line: bytes) -> tuple[bytes, Record] | None:
        """(the line as served, its record) if the record passes; decoded by ``raw``."""
        if not line:
            return None
        if self.levels is not None and not any(p in line for p in self.patterns):
            return None
        if self.fields is not None and not self.fields.may_match(line):
            return None
        found = raw.decode(line)
        if found is None:
            return None
        record = found[1]
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
        if self.fields is not None and not self.fields.accepts(record):
            return None
        return found


def _candidates(blob: bytes, flt: RecordFilter) -> list[bytes]:
    """The lines of ``blob`` that can pass ``flt``, oldest first.

    With a level filter only lines holding one of its level patterns are cut out, found by
    ``bytes.find`` in C: on a log with one ERROR in a thousand records this skips the
    per-line Python work for the other 999. A field filter refuses a whole batch that
    lacks its bytes the same way.
    """
    if flt.fields is not None and not flt.fields.may_match(blob):
        return []
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


def scan_backward(reader: SegmentReader, flt: RecordFilter) -> Iterator[tuple[bytes, Record]]:
    """Matching (line, record) pairs newest first, lazily, so a tail stops reading early."""
    for seg in reversed(reader.segments):
        for off, length in _runs(reader.backward(seg), flt.mask, forward=False):
            blob = reader.batch(seg, off, length)
            if blob is None:  # rotated away mid-query: everything older is gone too
                return
            for line in reversed(_candidates(blob, flt)):
                found = flt.pair(line)
                if found is not None:
                    yield found


def scan_forward(
    reader: SegmentReader, flt: RecordFilter, pos: int, start: int
) -> Iterator[tuple[bytes, Record]]:
    """Matching (line, record) pairs oldest first from entry ``start`` of segment position ``pos``.

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
                found = flt.pair(line)
                if found is not None:
                    yielded = True
                    yield found


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


def query_filter(
    tail: int,
    min_level: str,
    after: int | None,
    since: str | None,
    match: Mapping[str, str] | None,
    fields: FieldMatch | None = None,
) -> RecordFilter:
    """The filter of one ``read``, or ValueError saying which argument to fix."""
    if not 1 <= tail <= MAX_TAIL:
        raise ValueError(f"tail must be between 1 and {MAX_TAIL}; got {tail}")
    if min_level not in LEVELS:
        raise ValueError(f"min_level must be one of {', '.join(LEVELS)}; got {min_level!r}")
    since_ts = None if since is None else parse_iso(since)
    if since is not None and since_ts is None:
        raise ValueError(
            f"since must be an ISO 8601 time such as 2026-11-25T12:00:00Z; got {since!r}"
        )
    return RecordFilter(min_level, after, since_ts, dict(match) if match else None, fields)


def find_records(
    reader: SegmentReader, flt: RecordFilter, tail: int
) -> tuple[list[tuple[bytes, Record]], bool]:
    """((line, record) pairs oldest first, more after them): the newest ``tail`` matches,
    or with ``after``/``since`` the oldest ``tail`` after that point."""
    if flt.after is None and flt.since is None:
        found = list(islice(scan_backward(reader, flt), tail))
        found.reverse()
        return found, False
    pos = (0, 0)
    if flt.after is not None:
        pos = max(pos, reader.locate(0, flt.after + 1, inclusive=True))
    if flt.since is not None:
        pos = max(pos, reader.locate(1, flt.since, inclusive=False))
    scan = scan_forward(reader, flt, *pos)
    found = list(islice(scan, tail))
    return found, next(scan, None) is not None


def newest_lines(reader: SegmentReader, n: int) -> list[bytes]:
    """The ``n`` newest stored lines, oldest first (to rebuild a ring buffer)."""
    lines = [line for line, _ in islice(scan_backward(reader, RecordFilter()), n)]
    lines.reverse()
    return lines


def find_lines(
    reader: SegmentReader, after: int, limit: int
) -> tuple[list[int], list[bytes], bool]:
    """(seqs, lines, more): the stored lines after seq ``after``, oldest first, whole
    batches until about ``limit`` lines."""
    seqs: list[int] = []
    lines: list[bytes] = []
    more = gone = False
    pos, start = reader.locate(0, after + 1, inclusive=True)
    for p in range(pos, len(reader.segments)):
        seg = reader.segments[p]
        if reader.count(seg) is None:  # rotated away: a hole only before any line
            if lines:
                break
            continue
        for first, _, off, length, count, _ in reader.forward(seg, start if p == pos else 0):
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
    return seqs, lines, more
