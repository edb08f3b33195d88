"""The server's side of RQ, as the service's ``Execution``: enqueue, cancel, health.

Jobs run on ``jobtrail worker`` hosts, not here: stopping this server stops only its
reaper, and the jobs go on (another server, or this one restarted, follows them).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import redis
from rq import Queue
from rq.job import Job as RQJob

from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis.horse import StreamSender
from jobtrail.backends.redis.loopreads import LoopReads, ask_health, health_from
from jobtrail.backends.redis.reaper import Reaper
from jobtrail.backends.redis.records import RedisJobDB
from jobtrail.limits import Limits
from jobtrail.messages import CANCELLED_BEFORE_START, End, Outcome
from jobtrail.models import Health, JobStatus
from jobtrail.service.ports import NO_LIMITS

RUN_JOB = "jobtrail.backends.redis.horse.run_job"
CANCEL_SEEN_SECONDS = 2.0  # how long a cancel waits for this server to ingest the job's end


class EndsIngested(Protocol):
    def wait_ended(self, job_id: str, timeout: float) -> bool: ...


class RedisDispatcher:
    def __init__(
        self,
        conn: redis.Redis,
        db: RedisJobDB,
        options: dict[str, Any],
        ingest: EndsIngested,
        loop_reads: LoopReads,
    ) -> None:
        self._conn = conn
        self._loop_reads = loop_reads
        self._db = db
        self._options = options
        self._ingest = ingest
        self.queue = Queue(b.QUEUE, connection=conn)
        self.reaper = Reaper(conn, db, self.queue)

    def start(self) -> None:
        self.reaper.start()

    def stop(self) -> list[str]:
        """Jobs keep running on their workers: none is interrupted by this server's stop."""
        self.reaper.stop()
        return []

    def submit(
        self, job_id: str, job_type: str, params: dict[str, Any], limits: Limits = NO_LIMITS
    ) -> None:
        """Queue the job; its limits ride in its options, read by the worker that takes it
        (the horse ignores them)."""
        options = {**self._options, **limits.to_json()}
        try:
            self.queue.enqueue_call(
                RUN_JOB,
                args=(job_id, job_type, params, options),
                job_id=job_id,
                timeout=-1,  # jobtrail jobs run as long as they need; cancel stops them
                result_ttl=0,  # the result lives in the job's hash, not in RQ
                failure_ttl=3600,
                description=job_type,
            )
        except redis.RedisError as exc:
            self._db.transition(
                job_id,
                ("pending",),
                status=JobStatus.FAILED,
                error=f"could not queue the job: {exc}",
                completed_at=time.time(),
            )
            raise

    def cancel(self, job_id: str) -> str:
        """'pending' if the job was taken off the queue (it will never run: its end goes down
        its stream, and is ingested here before this returns), else 'running': the worker
        that holds it sees the cancel key within 0.2 s and stops its tree."""
        self._conn.set(b.cancel_key(job_id), b"1", ex=b.CANCEL_TTL)
        if not self.queue.remove(job_id):
            return "running"
        try:
            RQJob.fetch(job_id, connection=self._conn).delete(remove_from_queue=False)
        except Exception:  # already gone: nothing to clean
            pass
        StreamSender(self._conn, job_id)(End(job_id, Outcome.cancelled(CANCELLED_BEFORE_START)))
        self._ingest.wait_ended(job_id, CANCEL_SEEN_SECONDS)
        return "pending"

    async def health_on_loop(self) -> Health | None:
        """The counts are Redis's: awaited on the loop, in one round trip."""
        return await self._loop_reads.health()

    def health(self) -> Health:
        with self._conn.pipeline(transaction=False) as pipe:
            ask_health(pipe)
            return health_from(pipe.execute())
