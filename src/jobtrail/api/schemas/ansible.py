"""The answers of ``GET /api/jobs/{id}/hosts`` and ``GET /api/jobs/{id}/tasks``."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field


class TaskStatus(str, Enum):
    """How one host's run of one task ended, or that it is still going."""

    ok = "ok"
    changed = "changed"
    failed = "failed"
    skipped = "skipped"
    unreachable = "unreachable"
    ignored = "ignored"  # failed (or unreachable) with ignore_errors: the play went on
    rescued = "rescued"  # failed inside a block whose rescue section handled it
    running = "running"  # the host is being acted on now
    interrupted = "interrupted"  # running when the job ended (cancelled, crashed)


class HostRow(BaseModel):
    """One host's line of PLAY RECAP."""

    host: str
    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int
    rescued: int
    ignored: int


class HostsOut(BaseModel):
    """Per host what the terminal's PLAY RECAP prints, failed runs too; while the playbook
    runs (and for a run stopped before its recap), the counts so far."""

    job_id: str
    hosts: list[HostRow] = Field(description="Sorted by host, as PLAY RECAP lists them.")


class TaskRow(BaseModel):
    """One host's run of one task."""

    play: str | None
    task: str | None
    host: str
    status: TaskStatus
    started: str | None = Field(description="ISO 8601 UTC time the host started the task.")
    ended: str | None = Field(description="ISO 8601 UTC time it ended; null while running.")
    duration_s: float | None = Field(description="Seconds it took; null while running.")


class TasksOut(BaseModel):
    """One row per task and host, in the order the hosts started them."""

    job_id: str
    tasks: list[TaskRow]
    dropped: int = Field(
        description="Oldest finished rows let go to bound a huge playbook's table (usually 0)."
    )
