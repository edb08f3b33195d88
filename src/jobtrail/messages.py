"""What a job's process and the server say to each other, by name, and their one codec.

::

    server ── Task ──► job's process (pool worker: its control pipe; RQ: the job's arguments)
           ── StopNote ──► (pool worker, over a limit: why it is about to be stopped)

    job's process ──► Ready (pool worker only, once: it can take a task)
                  ──► Started ─► Batch … Progress … Batch ─► End(Outcome)
                        │
                        ├─ local: one pipe per worker, the messages themselves (pickled)
                        └─ redis: one stream per job, each message ``to_fields`` → XADD,
                                  ``from_fields`` ← XREAD

Everything a job's process sends travels in order on one channel, so when the reader sees
``End``, every ``Batch`` before it is written: the end-of-job barrier. The messages are
NamedTuples, as ``concurrent.futures.process`` names its ``_CallItem`` and ``_ResultItem``:
they pickle small and fast, and nothing reads them by position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

from jobtrail.models import JobStatus

CANCELLED_ON_REQUEST = "cancelled on request"
CANCELLED_BEFORE_START = "cancelled before it started"


@dataclass(frozen=True)
class Outcome:
    """How a job ended, as its process (or, when the process died, whoever saw it die) says.

    ``failure`` is a ``JobFailed``'s digest; ``dropped`` and ``last_seq`` are the batcher's
    count of records it could not send and the seq of its last one; ``peak_rss_mb`` the
    most the job's process tree held in memory, as its watch sampled it. They are None
    when nobody reported them (a process that died sent no count), so the job's record
    does not claim them either.
    """

    status: JobStatus
    error: str | None = None
    result: Any = None
    failure: dict[str, Any] | None = None
    dropped: int | None = None
    last_seq: int | None = None
    peak_rss_mb: float | None = None

    @classmethod
    def cancelled(cls, error: str = CANCELLED_ON_REQUEST) -> Outcome:
        return cls(JobStatus.CANCELLED, error)

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls(JobStatus.FAILED, error)

    @classmethod
    def died(cls, cause: str) -> Outcome:
        """The job's process ended without saying how: ``cause`` from ``death_reason``."""
        return cls(JobStatus.FAILED, f"job process died: {cause}")

    def reported(self) -> dict[str, Any]:
        """What goes into the job's ``extra``: drops, last seq, failure digest and peak
        memory, if sent."""
        return {
            key: value
            for key, value in (
                ("dropped", self.dropped),
                ("last_seq", self.last_seq),
                ("failure", self.failure),
                ("peak_rss_mb", self.peak_rss_mb),
            )
            if value is not None
        }

    def to_json(self) -> str:
        """Only the fields that are set, so an outcome reads as it did when it was a dict."""
        data = {key: value for key, value in asdict(self).items() if value is not None}
        return json.dumps(data, default=repr)

    @classmethod
    def from_json(cls, text: str | bytes) -> Outcome:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        kept = {key: value for key, value in data.items() if key in known}
        return cls(**{**kept, "status": JobStatus(data["status"])})


class Task(NamedTuple):
    """Run this job: what the pool sends down a worker's control pipe. The limits (None:
    none) are the pool's to watch (``limits.TreeWatch``); the job's process only reads why
    it was stopped (``StopNote``)."""

    job_id: str
    job_type: str
    params: dict[str, Any]
    memory_mb: int | None = None
    timeout_s: float | None = None


class StopNote(NamedTuple):
    """Why the pool is about to stop the running job (over a limit): sent down the control
    pipe just before ``limits.LIMIT_SIGNAL``, so the job's log and error can say it."""

    error: str


class Ready(NamedTuple):
    """A pool worker imported its job modules and waits for a task."""


class Started(NamedTuple):
    """The job began in process ``pid`` at ``at`` (its own clock: a reader that is behind
    must not shorten the job's duration); ``worker`` (or, without one, ``host``) names
    where, in distributed mode."""

    job_id: str
    pid: int
    host: str | None = None
    worker: str | None = None
    at: float = 0.0


class Progress(NamedTuple):
    """The newest of the progress reports since the last batch (they are coalesced)."""

    job_id: str
    pct: float
    step: str | None


class Batch(NamedTuple):
    """Consecutive rendered JSONL lines of one job: seqs ``first_seq`` to
    ``first_seq + line_count - 1``; ``level_mask`` ORs the level bits they hold, for the store's
    per-batch level index."""

    job_id: str
    first_seq: int
    line_count: int  # not ``count``: that is a tuple's method
    level_mask: int
    payload: bytes


class End(NamedTuple):
    """The job ended; sent after its last batch (the barrier)."""

    job_id: str
    outcome: Outcome


JobMessage = Started | Progress | Batch | End
Message = Ready | JobMessage
StreamFields = dict[str, bytes | str | int | float]


def to_fields(message: JobMessage) -> StreamFields:
    """A job's message as the fields of one stream entry (the stream's key names the job)."""
    if isinstance(message, Batch):
        return {
            "k": "b",
            "f": message.first_seq,
            "c": message.line_count,
            "m": message.level_mask,
            "p": message.payload,
        }
    if isinstance(message, Progress):
        return {"k": "p", "pct": float(message.pct), "s": json.dumps(message.step)}
    if isinstance(message, Started):
        return {
            "k": "s",
            "pid": message.pid,
            "host": message.host or "",
            "w": message.worker or "",
            "at": repr(message.at),
        }
    return {"k": "e", "o": message.outcome.to_json()}


def from_fields(job_id: str, entry: Mapping[bytes, bytes]) -> JobMessage:
    """The inverse of ``to_fields``; a ValueError for an entry it does not know."""
    kind = entry.get(b"k")
    if kind == b"b":
        return Batch(job_id, int(entry[b"f"]), int(entry[b"c"]), int(entry[b"m"]), entry[b"p"])
    if kind == b"p":
        return Progress(job_id, float(entry[b"pct"]), json.loads(entry[b"s"]))
    if kind == b"s":
        host = entry.get(b"host", b"").decode() or None
        worker = entry.get(b"w", b"").decode() or None
        return Started(job_id, int(entry[b"pid"]), host, worker, float(entry.get(b"at", 0.0)))
    if kind == b"e":
        return End(job_id, Outcome.from_json(entry[b"o"]))
    raise ValueError(f"unknown stream entry kind {kind!r}")
