"""The server's side of RQ: enqueue, cancel, and what ``/api/health`` reports.

Duck-types the few ``WorkerPool`` methods the API reads (``size``, ``alive_workers``,
``pending_count``, ``running_pids``), so routes need not know which backend runs.
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job as RQJob

from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis.records import RedisJobDB

RUN_JOB = "jobtrail.backends.redis.horse.run_job"


class RedisDispatcher:
    def __init__(self, conn: redis.Redis, db: RedisJobDB, options: dict[str, Any]) -> None:
        self._conn = conn
        self._db = db
        self._options = options
        self.queue = Queue(b.QUEUE, connection=conn)

    def submit(self, job_id: str, job_type: str, params: dict[str, Any]) -> None:
        self.queue.enqueue_call(
            RUN_JOB,
            args=(job_id, job_type, params, self._options),
            job_id=job_id,
            timeout=-1,  # jobtrail jobs run as long as they need; cancel stops them
            result_ttl=0,  # the result lives in the job's hash, not in RQ
            failure_ttl=3600,
            description=job_type,
        )

    def cancel(self, job_id: str) -> str:
        """'pending' if the job was taken off the queue (it will never run), else 'running':
        the worker that holds it sees the cancel key within 0.2 s and stops its tree."""
        self._conn.set(b.cancel_key(job_id), b"1", ex=b.CANCEL_TTL)
        if self.queue.remove(job_id):
            try:
                RQJob.fetch(job_id, connection=self._conn).delete(remove_from_queue=False)
            except Exception:  # already gone: nothing to clean
                pass
            return "pending"
        return "running"

    @property
    def size(self) -> int:
        return int(Worker.count(connection=self._conn, queue=self.queue))

    def alive_workers(self) -> int:
        return self.size

    def pending_count(self) -> int:
        return self._db.count("pending")

    def running_pids(self) -> dict[str, int]:
        return {job_id: 0 for job_id in self._db.status_ids("running")}
