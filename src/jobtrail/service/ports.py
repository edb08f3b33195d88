"""What the service needs from a backend, and what a backend tells the service.

::

                 ┌──────────── JobService ─────────────┐
    API, CLI ──► │ submit get list cancel wait health  │ ──► JobLogStore (the log files)
                 └──┬──────────────┬───────────────┬───┘
                    ▼              ▼               ▼
               JobRecords      Execution       LogIngest ──► store.append, then events
           (SQLite | Redis)  (pool | RQ)   (pipe listener | stream reader)
                                   │               │
                                   └──► BackendEvents: job_started / job_progress / job_ended

A backend (``jobtrail.backends.local`` or ``.redis``) builds the three from a config; the
service only ever talks to these protocols, so it never asks which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from jobtrail.limits import Limits
from jobtrail.logstore import JobLogStore
from jobtrail.messages import Outcome
from jobtrail.models import Health, Job
from jobtrail.service.config import ServerConfig
from jobtrail.service.home import Home

SERVER_STOPPED = "the server stopped while the job was running"
NO_LIMITS = Limits()


class BackendEvents(Protocol):
    """What a backend reports about a job, in the order its process sent it (every record
    before an ``end`` is in the store when ``job_ended`` is called: the barrier)."""

    def job_started(
        self, job_id: str, pid: int, worker: str | None = None, at: float = 0.0
    ) -> None: ...
    def job_progress(self, job_id: str, pct: float, step: str | None) -> None: ...
    def job_ended(self, job_id: str, outcome: Outcome) -> None: ...


class JobRecords(Protocol):
    """The jobs' records; ``params`` arrive masked, so no secret reaches them."""

    def insert(self, job: Job) -> None: ...
    def get(self, job_id: str) -> Job | None: ...
    def peek(self, job_id: str) -> Job | None:
        """The job if it can be had without waiting for a lock, a disk or a network (the
        API then answers on its event loop); None: ask ``get``, in a thread."""
        ...

    async def peek_on_loop(self, job_id: str) -> Job | None:
        """``peek``, or the job read without blocking the event loop (Redis mode awaits its
        record); None: ask ``get``, in a thread."""
        ...

    async def close_on_loop(self) -> None:
        """What ``peek_on_loop`` opened on the running loop, closed as the server stops."""
        ...

    def list_jobs(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> list[Job]: ...
    def count(self, status: str) -> int: ...
    def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        """Apply ``fields`` if the job's status is one of ``allowed`` (any if empty)."""
        ...

    def recover(self, error: str) -> list[Job]:
        """At start, after another server's end: the pending jobs this server must run."""
        ...

    def link_rerun(self, job_id: str, rerun_id: str) -> None:
        """Append ``rerun_id`` to the job's ``extra["reruns"]``, atomically."""
        ...

    def expirable(self, before: float) -> list[str]: ...
    def ended_since(self, since: float, limit: int) -> list[Job]:
        """Up to ``limit`` jobs that ended at or after ``since``, oldest end first."""
        ...

    def mark_expired(self, job_id: str) -> None: ...
    def forget_ended_before(self, before: float) -> None: ...
    def close(self) -> None: ...


class Execution(Protocol):
    """What runs the jobs. ``cancel`` says where the job was: for ``"pending"`` the backend
    itself ends the job ("cancelled before it started"); ``"running"`` means it is being
    stopped; None, not held here."""

    def start(self) -> None: ...
    def stop(self) -> list[str]:
        """Stop; returns the jobs this server was running that will not finish now."""
        ...

    def submit(
        self, job_id: str, job_type: str, params: dict[str, Any], limits: Limits = NO_LIMITS
    ) -> None:
        """Run the job (once a worker is free) under ``limits``."""
        ...

    def cancel(self, job_id: str) -> str | None: ...
    def health(self) -> Health: ...
    async def health_on_loop(self) -> Health | None:
        """``health()`` had without blocking the event loop (in memory, or awaited); None:
        ask it, in a thread."""
        ...


class LogIngest(Protocol):
    """The one writer of this server's log files: it appends what the jobs send."""

    batches: int  # batches and records appended so far (read by the metrics)
    records: int

    def lag_seconds(self) -> float:
        """The age of the oldest batch waiting to be written (0 when none waits)."""
        ...

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Backend:
    """The three parts a backend builds for one service."""

    records: JobRecords
    execution: Execution
    ingest: LogIngest


# what ``jobtrail.backends.<name>.open_backend`` is: it builds the parts on an open home
OpenBackend = Callable[[ServerConfig, Home, JobLogStore, BackendEvents], Backend]
