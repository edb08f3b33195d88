"""Logs expire: deleted once their job ended longer ago than the retention; the record stays.

A plain function over the job records and the log store, so the server's hourly task and
``jobtrail cleanup`` (which may run while no server does) share one rule in both modes.
"""

from __future__ import annotations

import time
from typing import Protocol

from jobtrail.logstore import JobLogStore

# Redis keeps an index of ended jobs for every server's hourly run: once it is this much
# older than the retention, every server's run has seen it and it is forgotten.
FORGET_AFTER_SECONDS = 6 * 3600


class ExpirableRecords(Protocol):
    """The part of ``JobRecords`` retention needs (SQLite's ``JobDB`` alone has it too)."""

    def expirable(self, before: float) -> list[str]: ...
    def mark_expired(self, job_id: str) -> None: ...
    def forget_ended_before(self, before: float) -> None: ...


def expire_logs(
    records: ExpirableRecords, store: JobLogStore, older_than_hours: float, dry_run: bool = False
) -> list[str]:
    """Delete the logs of jobs that ended over ``older_than_hours`` ago; never a running job's.

    Each server deletes its own copy; the record's flag makes every server answer 410."""
    cutoff = time.time() - older_than_hours * 3600
    expired = records.expirable(cutoff)
    if not dry_run:
        for job_id in expired:
            store.delete(job_id)
            records.mark_expired(job_id)
        records.forget_ended_before(cutoff - FORGET_AFTER_SECONDS)
    return expired
