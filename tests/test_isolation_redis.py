"""Distributed mode: the job's process is the work-horse's child, and holds nothing of Redis.

The horse (RQ's fork, which needs Redis) only relays; the job runs in a fork of it that closed
its copies of the Redis sockets and forgot the URL and its password (backends/redis/horse.py,
_forget.py). A Redis server that requires a password shows whether any copy is left where a
job can look (``tests/jobpkg/reach.py``). Local mode has no Redis: see tests/test_isolation.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.live import Live, live_server, server_config
from support.redis_server import Workers, redis_server

pytestmark = pytest.mark.timeout(120)
PASSWORD = "pw-e2-7f3a9c1d5b"
JOBS = ("jobs_fixture", "jobpkg.reach")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with redis_server(tmp_path_factory.mktemp("redis"), password=PASSWORD) as rs:
        workers = Workers(rs.url, count=0)
        try:
            workers.add(1, "--jobs-module", "jobpkg.reach")
            workers.wait_ready(1)
            config = server_config(tmp_path_factory.mktemp("home"), job_modules=JOBS)
            with live_server(config.__class__(**{**vars(config), "backend": rs.url})) as running:
                yield running
        finally:
            workers.stop()


def test_the_job_process_holds_no_redis_connection_url_or_password(live: Live) -> None:
    job = live.submit("redis_reach", needle_hex=PASSWORD.encode().hex())
    done = live.wait(job["job_id"])
    assert done["status"] == "completed", (done["error"], live.all_records(job["job_id"])[-5:])
    assert done["result"] == {"found": [], "open_connections": 0, "socket_fds": 0}


def test_the_relay_keeps_capture_order_and_the_end(live: Live) -> None:
    """What the job logs and prints arrives through the horse, gap-free, before its end."""
    job = live.submit("sleep", seconds=0, steps=3)
    done = live.wait(job["job_id"])
    assert done["status"] == "completed", done
    seqs = [r["seq"] for r in live.all_records(job["job_id"])]
    assert seqs and seqs == list(range(1, len(seqs) + 1))
