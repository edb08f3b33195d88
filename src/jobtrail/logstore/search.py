"""Search one job's log: every kept segment, on the stored bytes before any JSON is decoded.

::

    SegmentReader ──1 MiB reads of the batches whose level can match, into one buffer──> blob
        blob ──Pattern.raw: RE2 over the bytes as stored (see ``patterns``)──> candidate lines
            line ──RecordFilter (level, after, since, keys, fields)──> record
                record ──Pattern.test on its decoded message and exc_text──> match

A line is decoded only when its raw bytes could match. What is searched is a record's
``message`` and its traceback (``exc_text``): the text a terminal shows for it. The logger,
the level and ``fields`` are filters (``level=``, ``field=KEY:VALUE``), not text. Each match
comes with ``context`` neighbours from the unfiltered log, read around its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobtrail.logstore import raw
from jobtrail.logstore.files import Entry
from jobtrail.logstore.patterns import Pattern, compile_pattern
from jobtrail.logstore.queries import FieldMatch, Record, RecordFilter, query_filter
from jobtrail.logstore.segments import SegmentReader

MAX_CONTEXT = 20
# Adjacent batches are read together up to this much, into one reused buffer: big enough
# that a 50 MB log costs ~50 reads, small enough to stay in the CPU's cache while RE2 scans
# it (and a fresh 1 MiB bytes object per read would cost its page faults each time).
SCAN_BYTES = 1 << 20
# Context is read backwards/forwards in windows that start here and grow 4x per retry.
CONTEXT_WINDOW = 4096


# -- the scan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchQuery:
    pattern: Pattern
    filter: RecordFilter
    max_matches: int = 100
    context: int = 2
    count_all: bool = True  # go on past max_matches to count total_matches


def search_query(
    q: str,
    *,
    regex: bool = False,
    ignore_case: bool = False,
    context: int = 2,
    max_matches: int = 100,
    min_level: str = "DEBUG",
    after: int | None = None,
    since: str | None = None,
    match: Mapping[str, str] | None = None,
    fields: FieldMatch | None = None,
    count_all: bool = True,
) -> SearchQuery:
    """One search's query, or ValueError (BadPattern for a regex) saying what to fix."""
    if not 0 <= context <= MAX_CONTEXT:
        raise ValueError(f"context must be between 0 and {MAX_CONTEXT}; got {context}")
    if max_matches < 1:
        raise ValueError(f"max must be at least 1; got {max_matches}")
    flt = query_filter(1, min_level, after, since, match, fields)
    return SearchQuery(compile_pattern(q, regex, ignore_case), flt, max_matches, context, count_all)


@dataclass
class SearchMatch:
    """A match and its neighbours, each as its record and as the line to serve (``raw``:
    the stored line, so an answer splices it instead of encoding the record again)."""

    record: Record
    before: list[Record] = field(default_factory=list)
    after: list[Record] = field(default_factory=list)
    line: bytes = b""
    before_lines: list[bytes] = field(default_factory=list)
    after_lines: list[bytes] = field(default_factory=list)


@dataclass
class SearchPage:
    """One answer: ``matches`` oldest first, ``total_matches`` from ``after`` on (None when
    the query did not count past its page), ``next_after`` to continue while ``more``."""

    matches: list[SearchMatch]
    total_matches: int | None
    more: bool
    next_after: int | None
    latest_seq: int = 0
    truncated_before: int = 1


@dataclass
class _Hit:
    record: Record
    line: bytes  # as served (see ``raw.decode``)
    pos: int  # segment position in the reader
    start: int  # byte offset of the line in its segment
    end: int  # byte offset of its newline


def _reads(entries: Iterator[Entry], want: int) -> Iterator[tuple[int, int]]:
    """(offset, length) reads of the entries whose level mask can match, adjacent ones
    merged up to SCAN_BYTES."""
    start = end = -1
    for _, _, off, length, _, mask in entries:
        if not mask & want:
            continue
        if start >= 0 and off == end and off + length - start <= SCAN_BYTES:
            end = off + length
            continue
        if start >= 0:
            yield start, end - start
        start, end = off, off + length
    if start >= 0:
        yield start, end - start


def _lines(blob: bytearray, size: int, raw: Any) -> Iterator[tuple[int, int]]:
    """(start, end) of each line in ``blob[:size]`` that ``raw`` finds something in (all
    lines if ``raw`` is None), oldest first; RE2 goes on from the end of each line found."""
    pos = 0
    while pos < size:
        if raw is None:
            hit = pos
        else:
            m = raw.search(blob, pos, size)
            if m is None:
                return
            hit = m.start()
        start = blob.rfind(b"\n", 0, hit) + 1 if hit > pos else pos
        end = blob.find(b"\n", hit, size)
        end = size if end < 0 else end
        yield start, end
        pos = end + 1


def _scan(reader: SegmentReader, query: SearchQuery) -> Iterator[_Hit]:
    flt = query.filter
    pos, start = 0, 0
    if flt.after is not None:
        pos, start = max((pos, start), reader.locate(0, flt.after + 1, inclusive=True))
    if flt.since is not None:
        pos, start = max((pos, start), reader.locate(1, flt.since, inclusive=False))
    blob = bytearray(SCAN_BYTES)
    for p in range(pos, len(reader.segments)):
        seg = reader.segments[p]
        for off, length in _reads(reader.forward(seg, start if p == pos else 0), flt.mask):
            if length > len(blob):  # one batch bigger than a read: rare, so not kept
                blob = bytearray(length)
            view = memoryview(blob)
            size = reader.read_into(seg, off, view[:length])
            if size is None:  # rotated away: what it held is not kept any more
                break
            for s, e in _lines(blob, size, query.pattern.raw):
                line = bytes(view[s:e])
                if query.pattern.refuses(line):
                    continue
                found = flt.pair(line)
                if found is not None and query.pattern.matches(found[1]):
                    yield _Hit(found[1], found[0], p, off + s, off + e)
            if len(blob) > SCAN_BYTES:
                blob = bytearray(SCAN_BYTES)


def find_matches(reader: SegmentReader, query: SearchQuery, until: int | None = None) -> SearchPage:
    """The first ``max_matches`` matches with their context, and how many there are; none
    after seq ``until`` (what a running job wrote since the search began is the next one's)."""
    hits: list[_Hit] = []
    total = 0
    for hit in _scan(reader, query):
        if until is not None and int(hit.record["seq"]) > until:
            break
        total += 1
        if len(hits) < query.max_matches:
            hits.append(hit)
        elif not query.count_all:
            break
    more = total > len(hits)
    matches = []
    for h in hits:
        before = _before(reader, h.pos, h.start, query.context)
        after = _after(reader, h.pos, h.end + 1, query.context)
        matches.append(
            SearchMatch(
                h.record,
                [record for _, record in before],
                [record for _, record in after],
                h.line,
                [line for line, _ in before],
                [line for line, _ in after],
            )
        )
    next_after = int(hits[-1].record["seq"]) if more else None
    return SearchPage(matches, total if query.count_all else None, more, next_after)


# -- context: neighbours in the unfiltered log, read around the match's bytes -----------------
def _indexed_end(reader: SegmentReader, seg: int) -> int:
    n = reader.count(seg)
    if not n:
        return 0
    _, _, off, length, _, _ = reader.entry(seg, n - 1)
    return off + length


Pair = tuple[bytes, Record]  # (the line as served, its record): ``raw.decode``


def _decoded(parts: Iterable[bytes], n: int) -> list[Pair]:
    """The first ``n`` records of ``parts`` (torn or blank lines skipped); decodes no more."""
    found: list[Pair] = []
    for part in parts:
        if len(found) >= n:
            break
        pair = raw.decode(part) if part else None
        if pair is not None:
            found.append(pair)
    return found


def _before(reader: SegmentReader, pos: int, end: int, n: int) -> list[Pair]:
    """Up to ``n`` records stored before byte ``end`` of segment ``pos``, oldest first."""
    found: list[Pair] = []
    while n > len(found) and pos >= 0:
        seg, window = reader.segments[pos], CONTEXT_WINDOW
        while True:
            lo = max(0, end - window)
            blob = reader.batch(seg, lo, end - lo) or b""
            parts = blob.split(b"\n")
            records = _decoded(reversed(parts if lo == 0 else parts[1:]), n - len(found))
            if len(records) >= n - len(found) or lo == 0:
                break
            window *= 4
        found[:0] = reversed(records)
        pos -= 1
        end = _indexed_end(reader, reader.segments[pos]) if pos >= 0 else 0
    return found


def _after(reader: SegmentReader, pos: int, start: int, n: int) -> list[Pair]:
    """Up to ``n`` records stored from byte ``start`` of segment ``pos`` on, oldest first."""
    found: list[Pair] = []
    while n > len(found) and pos < len(reader.segments):
        seg, window = reader.segments[pos], CONTEXT_WINDOW
        end = _indexed_end(reader, seg)
        while start < end:
            hi = min(end, start + window)
            blob = reader.batch(seg, start, hi - start) or b""
            parts = blob.split(b"\n")
            records = _decoded(parts if hi == end else parts[:-1], n - len(found))
            if len(records) >= n - len(found) or hi == end:
                found += records
                break
            window *= 4
        pos, start = pos + 1, 0
    return found
