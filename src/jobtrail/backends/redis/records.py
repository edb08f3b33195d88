"""Job records in Redis: one hash per job, a sorted set per status, so every API server
shows the same jobs. The counterpart of ``backends.local.records`` (same record, same fields).

Status changes go through one Lua script that checks the current status first, so several
servers ingesting the same ``end`` (or a late progress after it) change a job at most once.

``RedisJobDB`` is the store the ingest, dispatcher and reaper share; ``RedisJobRecords`` is
the service's view of it, with local mode's end-of-job barrier: a server shows a job
terminal only once its own ingest wrote the job's ``end`` (i.e. every record before it).
Another server may have recorded the end in Redis a few milliseconds earlier; until then
this one shows the job as still running (bounded by ``BARRIER_GRACE``, in case the stream
is gone).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import redis

from jobtrail.backends.redis import keys as b
from jobtrail.backends.redis.loopreads import LoopReads
from jobtrail.models import Job, JobStatus

BARRIER_GRACE = 5.0  # seconds after an end recorded elsewhere that this server waits for it

TERMINAL = ("completed", "failed", "cancelled")
_FIELDS = (
    "job_id", "job_type", "params", "progress", "current_step", "result", "error",
    "created_at", "started_at", "completed_at", "logs_expired", "extra", "cancel_requested",
)  # fmt: skip
_UPDATABLE = {
    "status", "progress", "current_step", "result", "error", "started_at",
    "completed_at", "logs_expired", "extra", "cancel_requested",
}  # fmt: skip

# KEYS: job hash, status-set prefix, ended zset, active set. ARGV: job id, allowed current
# statuses ("" = any), then field/value pairs. Returns 1 if applied, 0 if the status did not
# allow it (or the job is unknown).
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
if ARGV[2] ~= '' and not string.find(',' .. ARGV[2] .. ',', ',' .. cur .. ',', 1, true) then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
local new = redis.call('HGET', KEYS[1], 'status')
if new ~= cur then
  local n = redis.call('HGET', KEYS[1], 'n')
  redis.call('ZREM', KEYS[2] .. cur, ARGV[1])
  redis.call('ZADD', KEYS[2] .. new, n, ARGV[1])
  if new == 'completed' or new == 'failed' or new == 'cancelled' then
    local ended = tonumber(redis.call('HGET', KEYS[1], 'completed_at'))
    if not ended then ended = tonumber(redis.call('TIME')[1]) end
    redis.call('ZADD', KEYS[3], ended, ARGV[1])
    redis.call('SREM', KEYS[4], ARGV[1])
  end
end
return 1
"""


def _ids(raw: Any) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i in raw]


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        if key == "status":
            out[key] = value.value if isinstance(value, JobStatus) else str(value)
        else:
            is_flag = key in ("logs_expired", "cancel_requested")
            out[key] = json.dumps(bool(value) if is_flag else value)
    return out


def _decode(raw: dict[bytes, bytes]) -> Job | None:
    if not raw or b"status" not in raw:
        return None
    values = {k.decode(): v.decode() for k, v in raw.items()}
    fields = {k: json.loads(values[k]) for k in _FIELDS if k in values}
    return Job(status=JobStatus(values["status"]), **fields)


class RedisJobDB:
    def __init__(self, conn: redis.Redis) -> None:
        self._conn = conn
        self._transition = conn.register_script(_TRANSITION)

    def insert(self, job: Job) -> None:
        """``job.params`` must already be masked, as for the SQLite store."""
        n = int(self._conn.incr(b.COUNTER))
        fields = _encode({name: getattr(job, name) for name in _FIELDS})
        fields["status"] = job.status.value
        fields["n"] = str(n)
        with self._conn.pipeline() as pipe:
            pipe.hset(b.job_key(job.job_id), mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(b.JOBS, {job.job_id: n})
            pipe.zadd(b.STATUS + job.status.value, {job.job_id: n})
            pipe.sadd(b.ACTIVE, job.job_id)
            pipe.execute()

    def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        """Apply ``fields`` if the job's status is one of ``allowed`` (any if empty)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        args: list[str] = [job_id, ",".join(allowed)]
        for key, value in _encode(fields).items():
            args += [key, value]
        keys = [b.job_key(job_id), b.STATUS, b.ENDED, b.ACTIVE]
        return bool(self._transition(keys=keys, args=args))

    def get(self, job_id: str) -> Job | None:
        raw: dict[bytes, bytes] = self._conn.hgetall(b.job_key(job_id))  # type: ignore[assignment]
        return _decode(raw)

    def get_many(self, job_ids: list[str]) -> list[Job]:
        with self._conn.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(b.job_key(job_id))
            found = [_decode(raw) for raw in pipe.execute()]
        return [job for job in found if job is not None]

    def list_jobs(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> list[Job]:
        """Newest first; a type filter pages through the (status) set until it has enough."""
        key = b.STATUS + status if status else b.JOBS
        found: list[Job] = []
        start, chunk = 0, max(limit, 200) if job_type else limit
        while len(found) < limit:
            ids = _ids(self._conn.zrevrange(key, start, start + chunk - 1))
            if not ids:
                break
            found += [j for j in self.get_many(ids) if not job_type or j.job_type == job_type]
            start += chunk
        return found[:limit]

    def count(self, status: str) -> int:
        return int(self._conn.zcard(b.STATUS + status))

    def status_ids(self, status: str) -> list[str]:
        return _ids(self._conn.zrange(b.STATUS + status, 0, -1))

    def active_ids(self) -> set[str]:
        return set(_ids(self._conn.smembers(b.ACTIVE)))

    def ended_since(self, since: float) -> list[str]:
        return _ids(self._conn.zrangebyscore(b.ENDED, since, "+inf"))

    def expirable(self, before: float) -> list[str]:
        """Jobs that ended before ``before``: every server deletes its own copy of their logs."""
        return _ids(self._conn.zrangebyscore(b.ENDED, "-inf", before))

    def mark_expired(self, job_id: str) -> None:
        self._conn.hset(b.job_key(job_id), "logs_expired", "true")

    def link_rerun(self, job_id: str, rerun_id: str) -> None:
        """Append to ``extra["reruns"]``, atomically (``_change_extra``)."""
        self._change_extra(
            job_id, lambda extra: {**extra, "reruns": [*extra.get("reruns", ()), rerun_id]}
        )

    def fill_extra(self, job_id: str, values: dict[str, Any]) -> None:
        """Add to the job's extra those of ``values`` it does not have (a worker's figures
        that came after its end), atomically."""
        self._change_extra(job_id, lambda extra: {**values, **extra})

    def _change_extra(
        self, job_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """``extra = change(extra)`` in a WATCH transaction: tried again if the hash changed
        in between (another rerun, a server's status change), so no change is lost."""
        key = b.job_key(job_id)
        with self._conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.hget(key, "extra")
                    if raw is None:
                        return
                    extra = change(json.loads(raw))
                    pipe.multi()
                    pipe.hset(key, "extra", json.dumps(extra))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def forget_ended_before(self, before: float) -> None:
        """Expired long enough ago that every server's hourly retention has seen them."""
        self._conn.zremrangebyscore(b.ENDED, "-inf", before)


class EndsSeen(Protocol):
    """What the barrier asks this server's ingest."""

    def track(self, job_id: str) -> None: ...
    def ended_here(self, job_id: str) -> bool: ...


class RedisJobRecords:
    """The service's ``JobRecords`` in Redis mode: ``RedisJobDB`` seen through the barrier."""

    def __init__(
        self, db: RedisJobDB, conn: redis.Redis, ingest: EndsSeen, loop_reads: LoopReads
    ) -> None:
        self.db = db
        self._conn = conn
        self._ingest = ingest
        self._loop_reads = loop_reads

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._conn.close()

    def recover(self, error: str) -> list[Job]:
        """Nothing to run again: pending jobs wait in RQ's queue, running ones on their
        workers, whichever server submitted them. Waits for Redis (it may be restarting)."""
        b.retrying(self._conn.ping, 30.0, "server start")
        return []

    def insert(self, job: Job) -> None:
        self.db.insert(job)
        self._ingest.track(job.job_id)  # the submitting server reads its stream at once

    def get(self, job_id: str) -> Job | None:
        job = self.db.get(job_id)
        return None if job is None else self._as_seen_here(job)

    def peek(self, job_id: str) -> None:
        """Never at once: the record is Redis's, and any server may change it."""
        return None

    async def peek_on_loop(self, job_id: str) -> Job | None:
        """The record awaited on the loop; None if there is none or Redis did not answer
        (``get``, in a thread, then says which)."""
        job = _decode(await self._loop_reads.job_hash(job_id) or {})
        return None if job is None else self._as_seen_here(job)

    async def close_on_loop(self) -> None:
        await self._loop_reads.close()

    def list_jobs(
        self, status: str | None = None, job_type: str | None = None, limit: int = 50
    ) -> list[Job]:
        return [self._as_seen_here(job) for job in self.db.list_jobs(status, job_type, limit)]

    def _as_seen_here(self, job: Job) -> Job:
        """The barrier: terminal only once this server's files hold the whole log."""
        if (
            job.status.terminal
            and not self._ingest.ended_here(job.job_id)
            and time.time() - (job.completed_at or 0) < BARRIER_GRACE
        ):
            self._ingest.track(job.job_id)
            status = JobStatus.RUNNING if job.started_at else JobStatus.PENDING
            return replace(job, status=status, completed_at=None, result=None, error=None)
        return job

    def count(self, status: str) -> int:
        return self.db.count(status)

    def transition(self, job_id: str, allowed: tuple[str, ...], **fields: Any) -> bool:
        """As ``RedisJobDB.transition``; the server that ends a job lets its stream expire
        (late or restarted servers read it until then). An end takes in what the job's
        worker measured and applied (``usage_key``: peak memory, limits)."""
        ending = "status" in fields and JobStatus(fields["status"]).terminal
        if ending and isinstance(fields.get("extra"), dict):
            fields["extra"] = {**self._usage(job_id), **fields["extra"]}
        applied = self.db.transition(job_id, allowed, **fields)
        if applied and ending:
            with contextlib.suppress(redis.RedisError):
                self._conn.expire(b.log_key(job_id), b.STREAM_TTL)
        return applied

    def _usage(self, job_id: str) -> dict[str, Any]:
        """The worker's figures for the job: a peak its end did not carry, the limits it ran
        under (its own defaults, for a job that came without)."""
        try:
            raw = self._conn.get(b.usage_key(job_id))
            usage = json.loads(raw) if raw else {}
        except (redis.RedisError, ValueError):
            return {}
        return {k: v for k, v in usage.items() if v is not None} if isinstance(usage, dict) else {}

    def expirable(self, before: float) -> list[str]:
        return self.db.expirable(before)

    def ended_since(self, since: float, limit: int) -> list[Job]:
        """Jobs that ended at or after ``since``, oldest end first (the metrics' fold)."""
        ids = _ids(self._conn.zrangebyscore(b.ENDED, since, "+inf", start=0, num=limit))
        return self.db.get_many(ids)

    def mark_expired(self, job_id: str) -> None:
        self.db.mark_expired(job_id)

    def link_rerun(self, job_id: str, rerun_id: str) -> None:
        self.db.link_rerun(job_id, rerun_id)

    def forget_ended_before(self, before: float) -> None:
        self.db.forget_ended_before(before)
