"""What the client returns: frozen dataclasses built from the API's JSON.

Dataclasses rather than TypedDicts: a TypedDict is the JSON itself, so its times would stay
strings; these parse them into aware ``datetime`` objects, give ``status`` as a
``JobStatus`` (``job.status.terminal``), cannot be changed by accident, and are checked
by mypy attribute by attribute. Each keeps the object it was built from as ``raw``: the
CLI prints it unchanged (``--json``), and a record's other keys (``thread``, ``exc_text``,
Ansible's ``host``/``task``/``event``) and fields newer than this client stay reachable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobtrail.models import JobStatus

JSON = Mapping[str, Any]


def parse_time(value: str) -> datetime:
    """An API time (ISO 8601, UTC): Python 3.10's ``fromisoformat`` does not take a ``Z``."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def maybe_time(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


@dataclass(frozen=True)
class LogRecord:
    """One captured log record; ``raw`` has every key the server sent."""

    seq: int
    timestamp: datetime
    level: str
    logger: str
    message: str
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> LogRecord:
        return cls(
            int(data["seq"]),
            parse_time(data["timestamp"]),
            data["level"],
            data["logger"],
            data["message"],
            raw=data,
        )


@dataclass(frozen=True)
class Gap:
    """Records ``first``..``last`` were deleted by log rotation before follow() read them."""

    first: int
    last: int


@dataclass(frozen=True)
class Job:
    """A job as the server reported it at the time of the call."""

    job_id: str
    job_type: str
    params: JSON
    status: JobStatus
    progress: float
    current_step: str | None
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    log_file: str | None
    logs_expired: bool
    records_dropped: int
    log_note: str | None
    failure: JSON | None
    recent_logs: tuple[LogRecord, ...]  # newest first; only get_job() fills it
    cancel_requested: bool
    duration_s: float | None  # ended - started, or so far while it runs; None while pending
    rerun_of: str | None  # the job this one reran
    reruns: tuple[str, ...]  # the jobs that reran this one, oldest first
    raw: JSON = field(repr=False, compare=False)
    memory_mb: int | None = None  # its memory limit (None: none)
    timeout_s: float | None = None  # its timeout in seconds (None: none)
    peak_rss_mb: float | None = None  # the most its process tree held, once it ended

    @classmethod
    def from_json(cls, data: JSON) -> Job:
        return cls(
            job_id=data["job_id"],
            job_type=data["job_type"],
            params=data["params"],
            status=JobStatus(data["status"]),
            progress=float(data["progress"]),
            current_step=data.get("current_step"),
            result=data.get("result"),
            error=data.get("error"),
            created_at=parse_time(data["created_at"]),
            started_at=maybe_time(data.get("started_at")),
            completed_at=maybe_time(data.get("completed_at")),
            log_file=data.get("log_file"),
            logs_expired=bool(data.get("logs_expired")),
            records_dropped=int(data.get("records_dropped") or 0),
            log_note=data.get("log_note"),
            failure=data.get("failure"),
            recent_logs=tuple(LogRecord.from_json(r) for r in data.get("recent_logs") or ()),
            cancel_requested=bool(data.get("cancel_requested")),
            duration_s=None if data.get("duration_s") is None else float(data["duration_s"]),
            rerun_of=data.get("rerun_of"),
            reruns=tuple(data.get("reruns") or ()),
            raw=data,
            memory_mb=data.get("memory_mb"),
            timeout_s=data.get("timeout_s"),
            peak_rss_mb=data.get("peak_rss_mb"),
        )


@dataclass(frozen=True)
class LogPage:
    """One read of a job's log, oldest first. To page through all of it, pass ``last_seq``
    as ``after`` while ``more`` is true."""

    job_id: str
    records: tuple[LogRecord, ...]
    log_file: str | None
    first_seq: int | None
    last_seq: int | None
    latest_seq: int  # the highest seq written so far
    truncated_before: int  # the lowest seq rotation has kept
    more: bool
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> LogPage:
        return cls(
            job_id=data["job_id"],
            records=tuple(LogRecord.from_json(r) for r in data["logs"]),
            log_file=data.get("log_file"),
            first_seq=data.get("first_seq"),
            last_seq=data.get("last_seq"),
            latest_seq=int(data["latest_seq"]),
            truncated_before=int(data["truncated_before"]),
            more=bool(data["more"]),
            raw=data,
        )


@dataclass(frozen=True)
class JobType:
    """A registered job type, the JSON Schema its params are checked against, and the paths
    ``--sandbox`` binds for it (``sandbox_read``, read-only; ``sandbox_write``)."""

    name: str
    description: str
    params_schema: JSON
    sandbox_read: tuple[str, ...] = ()
    sandbox_write: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: JSON) -> JobType:
        paths = data.get("sandbox_paths") or {}  # a server before they were declared: none
        return cls(
            data["name"],
            data["description"],
            data["params_schema"],
            tuple(paths.get("read", ())),
            tuple(paths.get("write", ())),
        )


@dataclass(frozen=True)
class Health:
    """The server's liveness and its workers (in distributed mode: those Redis knows)."""

    status: str
    workers: int
    workers_alive: int
    pending: int
    running: int

    @classmethod
    def from_json(cls, data: JSON) -> Health:
        return cls(
            data["status"],
            int(data["workers"]),
            int(data["workers_alive"]),
            int(data["pending"]),
            int(data["running"]),
        )
