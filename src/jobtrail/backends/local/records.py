"""Job records in SQLite (stdlib sqlite3), in the home, so they outlive the server.

``JobDB`` is the table: one connection shared by the server's threads under a lock, every
statement a single indexed row operation or a bounded list, so the lock is held for
microseconds. ``LocalJobRecords`` (the service's ``JobRecords``) keeps the pending and
running jobs in memory in front of it and writes every change through, but progress, which
is persisted at most every ``PROGRESS_PERSIST_SECONDS``, so a chatty job cannot turn into a
stream of disk writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

from jobtrail.models import Job, JobStatus

log = logging.getLogger("jobtrail.server")

PROGRESS_PERSIST_SECONDS = 1.0
# Ended jobs read lately, kept in memory: ``peek`` answers for them without SQLite, which is
# what lets GET /api/jobs/{id} answer on the event loop instead of a thread hop (0.3 ms of a
# 0.8 ms request here; benchmarks/api_latency.py)
ENDED_KEPT = 256
_PROGRESS = frozenset({"progress", "current_step"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    job_type TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    current_step TEXT,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    logs_expired INTEGER NOT NULL DEFAULT 0,
    extra TEXT NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, n);
CREATE INDEX IF NOT EXISTS jobs_type ON jobs (job_type, n);
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (completed_at);
"""

_COLUMNS = (
    "job_id, job_type, params, status, progress, current_step, result, error, "
    "created_at, started_at, completed_at, logs_expired, extra, cancel_requested"
)
_UPDATABLE = {
    "status", "progress", "current_step", "result", "error", "started_at",
    "completed_at", "logs_expired", "extra", "cancel_requested",
}  # fmt: skip
# columns added after the first release: a home made by an older version gets them on open
_ADDED_COLUMNS = {"cancel_requested": "INTEGER NOT NULL DEFAULT 0"}


def _row_to_job(row: tuple[Any, ...]) -> Job:
    return Job(
        job_id=row[0],
        job_type=row[1],
        params=json.loads(row[2]),
        status=JobStatus(row[3]),
        progress=row[4],
        current_step=row[5],
        result=None if row[6] is None else json.loads(row[6]),
        error=row[7],
        created_at=row[8],
        started_at=row[9],
        completed_at=row[10],
        logs_expired=bool(row[11]),
        extra=json.loads(row[12]),
        cancel_requested=bool(row[13]),
    )


class JobDB:
    def __init__(self, path: Path) -> None:
        path.touch(mode=0o600, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA secure_delete=ON")
            self._conn.executescript(_SCHEMA)
            have = {row[1] for row in self._conn.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in have:
                    self._conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert(self, job: Job) -> None:
        """``job.params`` must already be masked: secret values never reach the disk."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO jobs (job_id, job_type, params, status, created_at, extra) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.job_type,
                    json.dumps(job.params),
                    job.status.value,
                    job.created_at,
                    json.dumps(job.extra),
                ),
            )

    def update(self, job_id: str, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = []
        for key, value in fields.items():
            if key in ("result", "extra") and value is not None:
                value = json.dumps(value)
            elif isinstance(value, JobStatus):
                value = value.value
            values.append(value)
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self._lock:
            self._conn.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*values, job_id))

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _row_to_job(row)

    def list_jobs(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> list[Job]:
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if job_type:
            where.append("job_type = ?")
            args.append(job_type)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY n DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [_row_to_job(row) for row in rows]

    def pending(self) -> list[Job]:
        """Jobs still pending after a restart, in submission order."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE status = 'pending' ORDER BY n"
            ).fetchall()
        return [_row_to_job(row) for row in rows]

    def fail_running(self, error: str, now: float) -> list[str]:
        """Mark jobs a previous server left running as failed; returns their ids."""
        with self._lock:
            ids = [
                r[0] for r in self._conn.execute("SELECT job_id FROM jobs WHERE status = 'running'")
            ]
            self._conn.execute(
                "UPDATE jobs SET status = 'failed', error = ?, completed_at = ? "
                "WHERE status = 'running'",
                (error, now),
            )
        return ids

    def expirable(self, before: float) -> list[str]:
        """Ended jobs whose logs are older than ``before`` and still on disk."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id FROM jobs WHERE logs_expired = 0 AND completed_at IS NOT NULL "
                "AND completed_at < ? AND status IN ('completed', 'failed', 'cancelled')",
                (before,),
            ).fetchall()
        return [r[0] for r in rows]

    def mark_expired(self, job_id: str) -> None:
        self.update(job_id, logs_expired=1)

    def ended_since(self, since: float, limit: int) -> list[Job]:
        """Jobs that ended at or after ``since``, oldest end first (the metrics' fold)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE completed_at >= ? "
                "ORDER BY completed_at LIMIT ?",
                (since, limit),
            ).fetchall()
        return [_row_to_job(row) for row in rows]

    def forget_ended_before(self, before: float) -> None:
        """Nothing to forget: the table has no index of ended jobs beside the rows."""

    def count(self, status: str | None = None) -> int:
        with self._lock:
            if status is None:
                return int(self._conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
            return int(
                self._conn.execute(
                    "SELECT count(*) FROM jobs WHERE status = ?", (status,)
                ).fetchone()[0]
            )


class LocalJobRecords:
    """The jobs of a local server: pending and running ones in memory (``_active``), the
    rest in SQLite; every change but progress is written through at once."""

    def __init__(self, path: Path) -> None:
        self.db = JobDB(path)
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}
        self._ended: OrderedDict[str, Job] = OrderedDict()  # as SQLite gave them, newest last
        self._writes = 0  # changes to ended jobs so far: a read that saw one keeps nothing
        self._statuses: Counter[str] = Counter()  # of the active jobs: the queue limit's count
        self._progress_saved: dict[str, float] = {}

    def close(self) -> None:
        self.db.close()

    def recover(self, error: str) -> list[Job]:
        """A previous server's running jobs failed (their processes are gone); its pending
        jobs, in submission order, become active again for this server to run."""
        failed = self.db.fail_running(error, time.time())
        if failed:
            log.warning("marked %d job(s) failed: %s", len(failed), error)
        pending = self.db.pending()
        with self._lock:
            for job in pending:
                self._remember(job)
        return [replace(job) for job in pending]

    def insert(self, job: Job) -> None:
        self.db.insert(job)
        with self._lock:
            self._remember(replace(job))

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._active.get(job_id) or self._ended.get(job_id)
            if job is not None:
                return replace(job)
            writes = self._writes
        job = self.db.get(job_id)
        if job is not None and job.status.terminal:
            with self._lock:
                if writes == self._writes:  # no change of an ended job since it was read
                    self._ended[job_id] = replace(job)
                    while len(self._ended) > ENDED_KEPT:
                        self._ended.popitem(last=False)
        return job

    def peek(self, job_id: str) -> Job | None:
        """The job if it can be had without waiting (active, or ended and read lately);
        None: ask ``get``, in a thread. Never waits for the lock a write may hold."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            job = self._active.get(job_id) or self._ended.get(job_id)
            return None if job is None else replace(job)
        finally:
            self._lock.release()

    async def peek_on_loop(self, job_id: str) -> Job | None:
        return self.peek(job_id)

    async def close_on_loop(self) -> None:
        """Nothing is opened on a loop here."""

    def _changed(self, job_id: str) -> None:
        """An ended job changes: what is kept of it goes (lock held)."""
        self._writes += 1
        self._ended.pop(job_id, None)

    def list_jobs(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> list[Job]:
        jobs = self.db.list_jobs(status, job_type, limit)
        with self._lock:
            return [replace(self._active.get(job.job_id, job)) for job in jobs]

    def count(self, status: str) -> int:
        if status in ("pending", "running"):
            with self._lock:
                return self._statuses[status]
        return self.db.count(status)

    def running_ids(self) -> list[str]:
        with self._lock:
            return [j.job_id for j in self._active.values() if j.status is JobStatus.RUNNING]

    def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        with self._lock:
            job = self._active.get(job_id)
            if job is None:
                return self._transition_stored(job_id, allowed, fields)
            if allowed and job.status.value not in allowed:
                return False
            self._statuses[job.status.value] -= 1
            for key, value in fields.items():
                setattr(job, key, JobStatus(value) if key == "status" else value)
            if job.status.terminal:
                del self._active[job_id]
                self._progress_saved.pop(job_id, None)
            else:
                self._statuses[job.status.value] += 1
            if set(fields) <= _PROGRESS:
                now = time.monotonic()
                if now - self._progress_saved.get(job_id, 0.0) < PROGRESS_PERSIST_SECONDS:
                    return True
                self._progress_saved[job_id] = now
                fields = {"progress": job.progress, "current_step": job.current_step}
            self.db.update(job_id, **fields)
        return True

    def _transition_stored(
        self, job_id: str, allowed: tuple[str, ...], fields: dict[str, Any]
    ) -> bool:
        """A job not active here: ended (so only an unconditional change applies) or unknown."""
        if allowed:
            return False
        if self.db.get(job_id) is None:
            return False
        self._changed(job_id)
        self.db.update(job_id, **fields)
        return True

    def link_rerun(self, job_id: str, rerun_id: str) -> None:
        """Under the lock, so two reruns made at once are both listed."""
        with self._lock:
            job = self._active.get(job_id) or self.db.get(job_id)
            if job is None:
                return
            job.extra = {**job.extra, "reruns": [*job.extra.get("reruns", ()), rerun_id]}
            self._changed(job_id)
            self.db.update(job_id, extra=job.extra)

    def expirable(self, before: float) -> list[str]:
        return self.db.expirable(before)

    def mark_expired(self, job_id: str) -> None:
        self.db.mark_expired(job_id)
        with self._lock:  # after the write: a read that raced it keeps nothing (``get``)
            self._changed(job_id)

    def ended_since(self, since: float, limit: int) -> list[Job]:
        return self.db.ended_since(since, limit)

    def forget_ended_before(self, before: float) -> None:
        self.db.forget_ended_before(before)

    def _remember(self, job: Job) -> None:
        self._active[job.job_id] = job
        self._statuses[job.status.value] += 1
