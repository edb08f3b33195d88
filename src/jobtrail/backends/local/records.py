"""Job records in SQLite (stdlib sqlite3), in the home, so they outlive the server.

One connection shared by the server's threads under a lock: every statement here is a
single indexed row operation or a bounded list, so the lock is held for microseconds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from jobtrail.models import Job, JobStatus

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

    def count(self, status: str | None = None) -> int:
        with self._lock:
            if status is None:
                return int(self._conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
            return int(
                self._conn.execute(
                    "SELECT count(*) FROM jobs WHERE status = ?", (status,)
                ).fetchone()[0]
            )
