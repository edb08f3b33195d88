"""Logs expire: deleted once their job ended longer ago than the retention; the record stays.

A plain function over the job records and the log store, so the server's hourly task and
`jobtrail cleanup` (which may run while no server does) share one rule.
"""

from __future__ import annotations

import time

from jobtrail.backends.local.records import JobDB
from jobtrail.logstore.store import JobLogStore


def expire_logs(
    db: JobDB, store: JobLogStore, older_than_hours: float, dry_run: bool = False
) -> list[str]:
    """Delete the logs of jobs that ended over ``older_than_hours`` ago; never a running job's."""
    expired = db.expirable(time.time() - older_than_hours * 3600)
    if not dry_run:
        for job_id in expired:
            store.delete(job_id)
            db.update(job_id, logs_expired=1)
    return expired
