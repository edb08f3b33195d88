"""Plain data that describes jobs; kept apart from the store and pool that act on it."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

JOB_ID_PATTERN = r"^[a-z][a-z0-9_]{0,47}-[0-9a-f]{12}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)
_JOB_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class JobStatus(str, Enum):
    """Where a job is in its life; the last three are terminal."""

    PENDING = "pending"  # accepted, waiting for a free worker
    RUNNING = "running"  # a worker is executing it
    COMPLETED = "completed"  # returned normally; every record it emitted is written
    FAILED = "failed"  # raised, died, or the server stopped under it
    CANCELLED = "cancelled"  # stopped on request, with its process tree

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def is_job_id(value: str) -> bool:
    """True for ids of the shape jobtrail issues; anything else is rejected without disk access."""
    return _JOB_ID.fullmatch(value) is not None


def is_job_type_name(value: str) -> bool:
    return _JOB_TYPE.fullmatch(value) is not None


def new_job_id(job_type: str) -> str:
    return f"{job_type}-{secrets.token_hex(6)}"


@dataclass
class Job:
    """One job as stored; ``params`` are already masked where their names look secret."""

    job_id: str
    job_type: str
    params: dict[str, Any]
    status: JobStatus = JobStatus.PENDING
    progress: float = 0.0
    current_step: str | None = None
    result: Any = None
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    logs_expired: bool = False
    cancel_requested: bool = False  # the job is being stopped on request, not yet ended
    extra: dict[str, Any] = field(default_factory=dict)

    def duration_s(self) -> float | None:
        """Seconds from its start to its end, or so far while it runs; None if it never ran."""
        if self.started_at is None:
            return None
        end = time.time() if self.completed_at is None else self.completed_at
        return round(max(0.0, end - self.started_at), 3)


@dataclass(frozen=True)
class Health:
    """What runs the jobs, as ``/api/health`` reports it, whichever backend runs them."""

    workers: int
    workers_alive: int
    pending: int
    running: int
