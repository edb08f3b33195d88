"""``JobServer`` for ``--backend redis://…``: job state in Redis, RQ for execution, logs from
Redis Streams. ``server.open_server(config)`` returns one of these when ``config.backend`` is a URL.

Local mode's guarantees, and how they carry over:

* end-of-job barrier: a server shows a job terminal only once its own ingest wrote the
  job's ``end`` (i.e. every record before it). Another server may have recorded the end in
  Redis a few milliseconds earlier; until then this one shows the job as still running
  (bounded by ``BARRIER_GRACE``, in case the stream is gone);
* a job whose worker host vanished is failed with the cause by the reaper within
  ``HOST_LOST_WITHIN`` seconds.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import redis
from rq.registry import FailedJobRegistry, StartedJobRegistry

from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis.dispatch import RedisDispatcher
from jobtrail.backends.redis.horse import StreamSender
from jobtrail.backends.redis.ingest import StreamIngest
from jobtrail.backends.redis.records import TERMINAL, RedisJobDB
from jobtrail.errors import JobFinished, JobNotFound
from jobtrail.models import Job, JobStatus, is_job_id
from jobtrail.service.service import JobServer, ServerConfig

log = logging.getLogger("jobtrail.server")

MAX_DELIVERIES = 2  # a job whose worker died before it started is given to a worker again once
LOST_TWICE = "{n} workers took this job and died before it started; not retried again"
BARRIER_GRACE = 5.0  # seconds after an end recorded elsewhere that this server waits for it
HOST_LOST = (
    "the worker host stopped answering: no heartbeat from {worker} for {ttl} s "
    "(host down, worker killed, or cut off from Redis)"
)


class DistributedServer(JobServer):
    def __init__(self, config: ServerConfig) -> None:  # no super().__init__: no SQLite, no pool
        self._open_home(config)
        self.redis = b.connect(config.backend)
        self.jobs = RedisJobDB(self.redis)
        options = {
            "redact_patterns": list(config.redact_patterns),
            "redact": config.redact_defaults,
            "level": config.capture_level,
            "nice": config.worker_nice,
        }
        # the API reads size/alive_workers/pending_count/running_pids from `pool`
        self.dispatcher = RedisDispatcher(self.redis, self.jobs, options)
        self.pool = self.dispatcher  # type: ignore[assignment]
        self.ingest = StreamIngest(b.connect(config.backend), self.jobs, self.store, self)
        self._stopping = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="jobtrail-reaper", daemon=True)
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        b.retrying(self.redis.ping, 30.0, "server start")
        self.ingest.start()
        self._reaper.start()
        self._started = True

    def stop(self) -> None:
        """Jobs keep running on their workers: another (or a restarted) server picks them up."""
        self._stopping.set()
        if self._started:
            self.ingest.stop()
            self._reaper.join(5.0)
        self._started = False
        self._close_files()

    def _close_files(self) -> None:
        self.store.close()
        with contextlib.suppress(redis.RedisError):
            self.redis.close()
        self._lock_file.close()

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, job_type: str, params: dict[str, Any]) -> Job:
        job, values = self._accept(job_type, params, self.jobs.count("pending"))
        self.jobs.insert(job)
        self.ingest.track(job.job_id)
        try:
            self.dispatcher.submit(job.job_id, job_type, values)
        except redis.RedisError as exc:
            self.jobs.transition(
                job.job_id,
                ("pending",),
                status=JobStatus.FAILED,
                error=f"could not queue the job: {exc}",
                completed_at=time.time(),
            )
            raise
        return replace(job)

    def get(self, job_id: str) -> Job:
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return self._as_seen_here(job)

    def _as_seen_here(self, job: Job) -> Job:
        """The barrier: terminal only once this server's files hold the whole log."""
        if (
            job.status.terminal
            and not self.ingest.ended_here(job.job_id)
            and time.time() - (job.completed_at or 0) < BARRIER_GRACE
        ):
            self.ingest.track(job.job_id)
            status = JobStatus.RUNNING if job.started_at else JobStatus.PENDING
            return replace(job, status=status, completed_at=None, result=None, error=None)
        return job

    def list(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> builtins.list[Job]:
        return [self._as_seen_here(job) for job in self.jobs.list_jobs(status, job_type, limit)]

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status.terminal:
            raise JobFinished(job_id, job.status.value)
        if self.dispatcher.cancel(job_id) == "pending":
            outcome = {"status": "cancelled", "error": "cancelled before it started"}
            StreamSender(self.redis, job_id)(("end", job_id, outcome))
            self.ingest.wait_ended(job_id, 2.0)
        else:  # its worker stops it within 0.2 s; until it ended, every server shows this
            self.jobs.transition(job_id, ("pending", "running"), cancel_requested=True)
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.status.terminal or time.monotonic() >= deadline:
                return job
            time.sleep(0.05)

    # -- events from the ingest thread ------------------------------------------------------
    def job_started(self, job_id: str, pid: int, worker: str | None = None) -> None:
        self.jobs.transition(
            job_id,
            ("pending",),
            status=JobStatus.RUNNING,
            started_at=time.time(),
            extra={"worker": worker} if worker else {},
        )

    def job_progress(self, job_id: str, pct: float, step: str | None) -> None:
        fields: dict[str, Any] = {"progress": pct}
        if step is not None:
            fields["current_step"] = step
        self.jobs.transition(job_id, ("running",), **fields)

    def job_ended(self, job_id: str, outcome: dict[str, Any]) -> None:
        """Idempotent: the first server to ingest a job's end records it, others change nothing."""
        job = self.jobs.get(job_id)
        if job is None or job.status.value in TERMINAL:
            return
        status = JobStatus(outcome["status"])
        extra = self._ended_extra(job, outcome)
        self.jobs.transition(
            job_id,
            ("pending", "running"),
            status=status,
            error=outcome.get("error"),
            result=outcome.get("result"),
            completed_at=time.time(),
            extra=extra,
            progress=100.0 if status is JobStatus.COMPLETED else job.progress,
        )
        with contextlib.suppress(redis.RedisError):
            self.redis.expire(b.log_key(job_id), b.STREAM_TTL)

    # -- hosts that vanished ----------------------------------------------------------------
    def _reap_loop(self) -> None:
        while not self._stopping.wait(b.REAP_EVERY):
            try:
                self.reap()
            except redis.RedisError as exc:
                log.warning("reaper: redis unreachable (%s)", exc)

    def recover_lost(self) -> builtins.list[str]:
        """Retry deliveries RQ lost: a worker took the job off the queue and died before the
        job said "start". RQ's started-job registry notices (it is cleaned here, each reap,
        rather than every ten minutes by some worker) and moves the job to its failed
        registry; it goes back to the front of the queue once. Lost twice, it fails with that
        cause. Returns the ids acted on."""
        pending = self.jobs.status_ids("pending")
        if not pending:
            return []
        queue = self.dispatcher.queue
        StartedJobRegistry(queue=queue).cleanup()
        failed = FailedJobRegistry(queue=queue)
        lost = set(failed.get_job_ids())
        acted: builtins.list[str] = []
        for job_id in pending:
            claim = b.reap_key(job_id) + ":lost"  # one server acts on one loss
            if job_id not in lost or not self.redis.set(claim, b"1", nx=True, ex=10):
                continue
            if self.redis.zscore(failed.key, job_id) is None:  # another server just acted
                self.redis.delete(claim)
                continue
            job = self.jobs.get(job_id)
            if job is None or job.status is not JobStatus.PENDING:
                continue
            deliveries = int(job.extra.get("deliveries", 1))
            if deliveries >= MAX_DELIVERIES:
                error = LOST_TWICE.format(n=deliveries)
                log.warning("job %s: %s", job_id, error)
                StreamSender(self.redis, job_id)(
                    ("end", job_id, {"status": "failed", "error": error})
                )
            else:
                log.warning("job %s: its worker died before it started; queued again", job_id)
                self.jobs.transition(
                    job_id, ("pending",), extra={**job.extra, "deliveries": deliveries + 1}
                )
                failed.requeue(job_id, at_front=True)
            self.redis.delete(claim)  # acted on: a later loss is a new one
            acted.append(job_id)
        return acted

    def reap(self) -> builtins.list[str]:
        """Fail running jobs whose heartbeat expired: their end goes down their stream, so
        every server ends them the same way, after every record that did arrive."""
        self.recover_lost()
        running = self.jobs.status_ids("running")
        if not running:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in running:
                pipe.exists(b.heartbeat_key(job_id))
            beating = pipe.execute()
        reaped: builtins.list[str] = []
        for job_id, alive in zip(running, beating, strict=True):
            if alive or not self.redis.set(b.reap_key(job_id), b"1", nx=True, ex=60):
                continue
            job = self.jobs.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                continue
            worker = job.extra.get("worker") or "its worker"
            error = HOST_LOST.format(worker=worker, ttl=b.HEARTBEAT_TTL)
            log.warning("job %s: %s", job_id, error)
            StreamSender(self.redis, job_id)(("end", job_id, {"status": "failed", "error": error}))
            reaped.append(job_id)
        return reaped

    # -- retention ----------------------------------------------------------------------------
    def expire_logs(
        self, older_than_hours: float | None = None, dry_run: bool = False
    ) -> builtins.list[str]:
        """Each server deletes its own copy; the shared flag makes every server answer 410."""
        hours = self.config.retention_hours if older_than_hours is None else older_than_hours
        cutoff = time.time() - hours * 3600
        expired = self.jobs.expirable(cutoff)
        if not dry_run:
            for job_id in expired:
                self.store.delete(job_id)
                self.jobs.mark_expired(job_id)
            self.jobs.forget_ended_before(cutoff - 6 * 3600)  # every server's hourly run saw them
        return expired
