"""Key names, timings and the connection helper shared by servers and workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

PREFIX = "jobtrail:"
QUEUE = "jobtrail"  # the RQ queue's name
JOBS = PREFIX + "jobs"  # sorted set: every job, score = submission number
STATUS = PREFIX + "status:"  # + status: sorted set of the jobs in that status
ENDED = PREFIX + "ended"  # sorted set: ended jobs, score = completed_at
ACTIVE = PREFIX + "active"  # set: jobs whose streams are live (pending or running)
COUNTER = PREFIX + "n"

HEARTBEAT_EVERY = 1.0  # a worker refreshes the heartbeat of the job it runs this often
HEARTBEAT_TTL = 10  # seconds: a running job without a heartbeat this long lost its host
REAP_EVERY = 1.0  # how often a server looks for such jobs
HOST_LOST_WITHIN = HEARTBEAT_TTL + 2 * int(REAP_EVERY) + 3  # what the README promises: 15 s
STREAM_MAXLEN = 20_000  # entries (batches of ≤256 records) kept per job's stream, approximately
STREAM_TTL = 3600  # seconds a job's stream is kept after it ended: late or restarted servers
CANCEL_TTL = 86_400
SEND_RETRY_SECONDS = 60.0  # how long a horse keeps retrying an XADD while Redis is away

T = TypeVar("T")


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def log_key(job_id: str) -> str:
    return f"{PREFIX}log:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"{PREFIX}cancel:{job_id}"


def usage_key(job_id: str) -> str:
    """What the job's worker measured and applied (peak memory, limits), merged into the
    job's record when it ends."""
    return f"{PREFIX}usage:{job_id}"


def heartbeat_key(job_id: str) -> str:
    return f"{PREFIX}hb:{job_id}"


def reap_key(job_id: str) -> str:
    return f"{PREFIX}reaping:{job_id}"


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``; bytes in and out, with timeouts so a lost Redis is noticed."""
    options.setdefault("socket_timeout", 10.0)
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("health_check_interval", 30)
    return redis.Redis.from_url(url, **options)


def retrying(call: Callable[[], T], seconds: float, what: str = "redis") -> T:
    """``call()``, retried with backoff while Redis is unreachable (a restart), then OSError."""
    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise OSError(f"{what}: redis unreachable for {seconds:.0f} s: {exc}") from exc
            time.sleep(delay)
            delay = min(1.0, delay * 2)
