"""The reaper thread of an API server in Redis mode: jobs whose worker vanished.

* a running job whose worker's heartbeat expired (host down, worker killed, cut off from
  Redis) is failed with that cause within ``HOST_LOST_WITHIN`` seconds;
* a job RQ lost between dequeue and start (its worker died first) is queued again once.

Both act by sending the job's ``end`` down its stream, as its worker would have, so every
server ends the job the same way, after every record that did arrive. Several servers
reap at once: a short-lived claim key makes one of them act on each job.
"""

from __future__ import annotations

import logging
import threading

import redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis.horse import StreamSender
from jobtrail.backends.redis.records import RedisJobDB
from jobtrail.messages import End, Outcome
from jobtrail.models import JobStatus

log = logging.getLogger("jobtrail.server")

MAX_DELIVERIES = 2  # a job whose worker died before it started is given to a worker again once
LOST_TWICE = "{n} workers took this job and died before it started; not retried again"
HOST_LOST = (
    "the worker host stopped answering: no heartbeat from {worker} for {ttl} s "
    "(host down, worker killed, or cut off from Redis)"
)


class Reaper:
    def __init__(self, conn: redis.Redis, db: RedisJobDB, queue: Queue) -> None:
        self._conn = conn
        self._db = db
        self._queue = queue
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobtrail-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(b.REAP_EVERY):
            try:
                self.reap()
            except redis.RedisError as exc:
                log.warning("reaper: redis unreachable (%s)", exc)

    def _end(self, job_id: str, error: str) -> None:
        log.warning("job %s: %s", job_id, error)
        StreamSender(self._conn, job_id)(End(job_id, Outcome.failed(error)))

    def recover_lost(self) -> list[str]:
        """Retry deliveries RQ lost: a worker took the job off the queue and died before the
        job said "start". RQ's started-job registry notices (it is cleaned here, each reap,
        rather than every ten minutes by some worker) and moves the job to its failed
        registry; it goes back to the front of the queue once. Lost twice, it fails with that
        cause. Returns the ids acted on."""
        pending = self._db.status_ids("pending")
        if not pending:
            return []
        StartedJobRegistry(queue=self._queue).cleanup()
        failed = FailedJobRegistry(queue=self._queue)
        lost = set(failed.get_job_ids())
        acted: list[str] = []
        for job_id in pending:
            claim = b.reap_key(job_id) + ":lost"  # one server acts on one loss
            if job_id not in lost or not self._conn.set(claim, b"1", nx=True, ex=10):
                continue
            if self._conn.zscore(failed.key, job_id) is None:  # another server just acted
                self._conn.delete(claim)
                continue
            job = self._db.get(job_id)
            if job is None or job.status is not JobStatus.PENDING:
                continue
            deliveries = int(job.extra.get("deliveries", 1))
            if deliveries >= MAX_DELIVERIES:
                self._end(job_id, LOST_TWICE.format(n=deliveries))
            else:
                log.warning("job %s: its worker died before it started; queued again", job_id)
                self._db.transition(
                    job_id, ("pending",), extra={**job.extra, "deliveries": deliveries + 1}
                )
                failed.requeue(job_id, at_front=True)
            self._conn.delete(claim)  # acted on: a later loss is a new one
            acted.append(job_id)
        return acted

    def reap(self) -> list[str]:
        """Fail running jobs whose heartbeat expired; returns their ids."""
        self.recover_lost()
        running = self._db.status_ids("running")
        if not running:
            return []
        with self._conn.pipeline(transaction=False) as pipe:
            for job_id in running:
                pipe.exists(b.heartbeat_key(job_id))
            beating = pipe.execute()
        reaped: list[str] = []
        for job_id, alive in zip(running, beating, strict=True):
            if alive or not self._conn.set(b.reap_key(job_id), b"1", nx=True, ex=60):
                continue
            job = self._db.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                continue
            worker = job.extra.get("worker") or "its worker"
            self._end(job_id, HOST_LOST.format(worker=worker, ttl=b.HEARTBEAT_TTL))
            reaped.append(job_id)
        return reaped
