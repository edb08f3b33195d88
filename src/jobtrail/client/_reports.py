"""What the client returns for finding out why without reading a whole log: a search's
matches with their context, the log's summary, and a playbook's hosts and tasks.

Frozen dataclasses as in ``_models``, each keeping the JSON it was built from as ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobtrail.client._models import JSON, LogRecord, maybe_time


def _record(data: JSON | None) -> LogRecord | None:
    return None if data is None else LogRecord.from_json(data)


def _records(items: Any) -> tuple[LogRecord, ...]:
    return tuple(LogRecord.from_json(item) for item in items or ())


@dataclass(frozen=True)
class SearchMatch:
    """A record that matched, with up to ``context`` records around it from the unfiltered
    log (``before`` and ``after``, oldest first)."""

    record: LogRecord
    before: tuple[LogRecord, ...]
    after: tuple[LogRecord, ...]
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> SearchMatch:
        own = {key: value for key, value in data.items() if key not in ("before", "after")}
        return cls(
            LogRecord.from_json(own),
            _records(data.get("before")),
            _records(data.get("after")),
            data,
        )


@dataclass(frozen=True)
class SearchResult:
    """One page of a search, oldest match first. ``total_matches`` counts every match in
    the kept log from ``after`` on, also those past ``max``; while ``more`` is true, pass
    ``next_after`` as ``after`` for the next page."""

    job_id: str
    q: str
    regex: bool
    ignore_case: bool
    total_matches: int
    matches: tuple[SearchMatch, ...]
    more: bool
    next_after: int | None
    truncated_before: int | None  # the lowest seq rotation has kept
    latest_seq: int
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> SearchResult:
        return cls(
            job_id=data["job_id"],
            q=data["q"],
            regex=bool(data["regex"]),
            ignore_case=bool(data["ignore_case"]),
            total_matches=int(data["total_matches"]),
            matches=tuple(SearchMatch.from_json(m) for m in data["matches"]),
            more=bool(data["more"]),
            next_after=data.get("next_after"),
            truncated_before=data.get("truncated_before"),
            latest_seq=int(data["latest_seq"]),
            raw=data,
        )


@dataclass(frozen=True)
class HostRow:
    """One host's line of the PLAY RECAP."""

    host: str
    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int
    rescued: int
    ignored: int
    raw: JSON = field(repr=False, compare=False)

    COUNTS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")

    @classmethod
    def from_json(cls, data: JSON) -> HostRow:
        counts = {name: int(data.get(name) or 0) for name in cls.COUNTS}
        return cls(host=data["host"], raw=data, **counts)


@dataclass(frozen=True)
class TaskRow:
    """One task on one host: ``status`` is ``running`` (and ``ended`` and ``duration_s``
    None) while the host is being acted on."""

    play: str
    task: str
    host: str
    status: str
    started: datetime | None
    ended: datetime | None
    duration_s: float | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> TaskRow:
        duration = data.get("duration_s")
        return cls(
            play=data.get("play") or "",
            task=data.get("task") or "",
            host=data.get("host") or "",
            status=data["status"],
            started=maybe_time(data.get("started")),
            ended=maybe_time(data.get("ended")),
            duration_s=None if duration is None else float(duration),
            raw=data,
        )


@dataclass(frozen=True)
class RepeatedShape:
    """A message shape (numbers, hex and ids normalised) and how often it was logged."""

    shape: str
    count: int
    first_seq: int
    last_seq: int
    example: Any  # what the server gave as an example of the shape
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> RepeatedShape:
        return cls(
            data["shape"],
            int(data["count"]),
            int(data["first_seq"]),
            int(data["last_seq"]),
            data.get("example"),
            raw=data,
        )


@dataclass(frozen=True)
class Summary:
    """A job's whole log at a glance, also the part rotation deleted: counts per level, the
    first and last error, the most repeated message shapes, its time span; ``hosts`` is
    the PLAY RECAP of a playbook (None for other jobs)."""

    job_id: str
    records: int
    bytes: int
    levels: JSON
    first_error: LogRecord | None
    last_error: LogRecord | None
    repeated: tuple[RepeatedShape, ...]
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    span_s: float | None
    records_dropped: int
    truncated_before: int | None
    summarised_to_seq: int
    hosts: tuple[HostRow, ...] | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> Summary:
        hosts = data.get("hosts")
        span = data.get("span_s")
        return cls(
            job_id=data["job_id"],
            records=int(data["records"]),
            bytes=int(data["bytes"]),
            levels=data.get("levels") or {},
            first_error=_record(data.get("first_error")),
            last_error=_record(data.get("last_error")),
            repeated=tuple(RepeatedShape.from_json(r) for r in data.get("repeated") or ()),
            first_timestamp=maybe_time(data.get("first_timestamp")),
            last_timestamp=maybe_time(data.get("last_timestamp")),
            span_s=None if span is None else float(span),
            records_dropped=int(data.get("records_dropped") or 0),
            truncated_before=data.get("truncated_before"),
            summarised_to_seq=int(data.get("summarised_to_seq") or 0),
            hosts=None if hosts is None else tuple(HostRow.from_json(h) for h in hosts),
            raw=data,
        )
